//! The fused Mamba-3 scan's CUDA kernels (`src/mamba3_scan.cpp`), run on the CPU under the CUDA
//! emulation of `emulation/mod.rs`. The output and all seven gradients must equal MLX autodiff
//! through the step-by-step recurrence, written here independently (the rotation as
//! `B ⊙ cos + J(B) ⊙ sin` with `J(b0, b1) = (b1, −b0)`). The same kernels run for real in the
//! trainer's GPU test.

mod emulation;

use emulation::{
    PRELUDE, assert_close, compile_and_run, constant, kernel_source, read, values, write,
};
use mixsweep_mlx::{Array, Dtype, value_and_grad};

const KERNELS: &str = include_str!("../src/mamba3_scan.cpp");

/// One problem: batch, sequence, channels, groups, state size and the chunk that sets the floor.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    seq: usize,
    inner: usize,
    groups: usize,
    state: usize,
    chunk: usize,
}

impl Case {
    fn pairs(&self) -> usize {
        self.state / 2
    }
    fn cblocks(&self) -> usize {
        let per_block = constant(KERNELS, "kThreads") / self.pairs();
        (self.inner / self.groups).div_ceil(per_block)
    }
    fn sizes(&self) -> [usize; 8] {
        let (b, t, i, g, n) = (self.batch, self.seq, self.inner, self.groups, self.state);
        let bti = b * t * i;
        [
            bti,
            bti,
            bti,
            bti * n / 2,
            b * t * g * n,
            b * t * g * n,
            i * n,
            bti,
        ]
    }

    /// The kernels as one C++ program (the constants MLX would inject).
    fn program(&self) -> String {
        let threads = constant(KERNELS, "kThreads");
        let ckpt = constant(KERNELS, "kCheckpoint");
        let (b, t, i, g) = (self.batch, self.seq, self.inner, self.groups);
        let constants = format!(
            "  constexpr int SEQ = {t}; constexpr int INNER = {i}; constexpr int PAIRS = {p};\n  \
             constexpr int GROUPS = {g}; constexpr int PER_GROUP = {per}; constexpr int CBLOCKS = {cb};\n  \
             constexpr int CKPT = {ckpt}; constexpr int CHUNK = {chunk}; constexpr int THREADS = {threads};\n",
            p = self.pairs(),
            per = i / g,
            cb = self.cblocks(),
            chunk = self.chunk,
        );
        let [bti, _, _, btip, btgn, _, in_, _] = self.sizes();
        let parts = btgn * self.cblocks();
        let chunks = t.div_ceil(ckpt);
        format!(
            "#define THREADS_PER_BLOCK {threads}\n{PRELUDE}{header}\n\
             void forward(const float* u, const float* delta, const float* lambda, const float* theta,\n\
                          const float* bm, const float* cm, const float* a, float* y, float* checkpoints) {{\n\
                          {constants}{forward}}}\n\
             void backward(const float* u, const float* delta, const float* lambda, const float* theta,\n\
                           const float* bm, const float* cm, const float* a, const float* checkpoints,\n\
                           const float* dy, float* du, float* ddelta, float* dlambda, float* dtheta,\n\
                           float* da_part, float* db_part, float* dc_part) {{\n{constants}{backward}}}\n\
             int main() {{\n\
               auto u = load(\"u.bin\", {bti}), delta = load(\"delta.bin\", {bti}), lambda = load(\"lambda.bin\", {bti});\n\
               auto theta = load(\"theta.bin\", {btip}), bm = load(\"b.bin\", {btgn}), cm = load(\"c.bin\", {btgn});\n\
               auto a = load(\"a.bin\", {in_}), dy = load(\"dy.bin\", {bti});\n\
               std::vector<float> y({bti}, NAN), ck({b} * {chunks} * {i} * {p} * 3, NAN), du({bti}, NAN),\n\
                   dd({bti}, NAN), dl({bti}, NAN), dth({btip}, NAN), da({b} * {in_}, NAN), db({parts}, NAN),\n\
                   dc({parts}, NAN);\n\
               launch({blocks}, [&] {{ forward(u.data(), delta.data(), lambda.data(), theta.data(), bm.data(),\n\
                                               cm.data(), a.data(), y.data(), ck.data()); }});\n\
               launch({blocks}, [&] {{ backward(u.data(), delta.data(), lambda.data(), theta.data(), bm.data(),\n\
                                                cm.data(), a.data(), ck.data(), dy.data(), du.data(), dd.data(),\n\
                                                dl.data(), dth.data(), da.data(), db.data(), dc.data()); }});\n\
               save(\"y.out\", y); save(\"du.out\", du); save(\"ddelta.out\", dd); save(\"dlambda.out\", dl);\n\
               save(\"dtheta.out\", dth); save(\"da.out\", da); save(\"db.out\", db); save(\"dc.out\", dc);\n\
             }}\n",
            header = kernel_source(KERNELS, "kHeader"),
            forward = kernel_source(KERNELS, "kForward"),
            backward = kernel_source(KERNELS, "kBackward"),
            p = self.pairs(),
            blocks = b * g * self.cblocks(),
        )
    }
}

/// `x [B, 1, G, N]` rotated by `cos, sin [B, 1, I, N]` (each pair's angle repeated) for the
/// group's channels: `x ⊙ cos + J(x) ⊙ sin`, `J(x0, x1) = (x1, −x0)`.
fn rotated(x: &Array, cos: &Array, sin: &Array, inner: usize) -> mixsweep_mlx::Result<Array> {
    let (b, g, n) = (x.dim(0), x.dim(2), x.dim(3));
    let by_channel = |a: &Array| -> mixsweep_mlx::Result<Array> {
        a.expand_dims(3)?
            .broadcast_to(&[b, 1, g, inner / g, n])?
            .reshape(&[b as i32, 1, inner as i32, n as i32])
    };
    let x = by_channel(x)?;
    let pairs = x.reshape(&[b as i32, 1, inner as i32, (n / 2) as i32, 2])?;
    let swapped = mixsweep_mlx::concatenate(
        &[
            &pairs.slice_axis(4, 1, 2)?,
            &pairs.slice_axis(4, 0, 1)?.neg()?,
        ],
        4,
    )?
    .reshape(&[b as i32, 1, inner as i32, n as i32])?;
    x.mul(cos)?.add(&swapped.mul(sin)?)
}

/// The recurrence one step at a time in MLX ops, differentiated by MLX: `y` and the gradients of
/// `Σ y ⊙ dy` in u, delta, lambda, theta, B, C and A.
fn reference(inputs: &[Array], dy: &Array, floor: f32) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dy = dy.clone();
    let (values, grads) = value_and_grad(
        move |x| {
            let (u, delta, lambda, theta, bm, cm, a) =
                (&x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &x[6]);
            let (b, t, i, n) = (u.dim(0), u.dim(1), u.dim(2), a.dim(1));
            let mut phase = Array::zeros(&[b, 1, i, n / 2], Dtype::F32)?;
            let mut s = Array::zeros(&[b, 1, i, n], Dtype::F32)?;
            let mut v_prev = s.clone();
            let mut ys = vec![];
            for step in 0..t {
                let at = |m: &Array| m.slice_axis(1, step, step + 1);
                let dt = at(delta)?.expand_dims(-1)?; // [B, 1, I, 1]
                let lam = at(lambda)?.expand_dims(-1)?;
                phase = phase.add(&dt.mul(&at(theta)?)?)?;
                let each = |f: Array| -> mixsweep_mlx::Result<Array> {
                    f.expand_dims(-1)?
                        .broadcast_to(&[b, 1, i, n / 2, 2])?
                        .reshape(&[b as i32, 1, i as i32, n as i32])
                };
                let (cos, sin) = (each(phase.cos()?)?, each(phase.sin()?)?);
                let v = rotated(&at(bm)?, &cos, &sin, i)?.mul(&at(u)?.expand_dims(-1)?)?;
                let la = dt.mul(a)?;
                let decay = la.maximum_scalar(floor)?.exp()?;
                let beta = lam.neg()?.add_scalar(1.0)?.mul(&dt)?.mul(&la.exp()?)?;
                s = decay
                    .mul(&s)?
                    .add(&beta.mul(&v_prev)?)?
                    .add(&lam.mul(&dt)?.mul(&v)?)?;
                let c_rot = rotated(&at(cm)?, &cos, &sin, i)?;
                ys.push(s.mul(&c_rot)?.sum(&[-1], false)?);
                v_prev = v;
            }
            let refs: Vec<&Array> = ys.iter().collect();
            let y = mixsweep_mlx::concatenate(&refs, 1)?;
            Ok(vec![y.mul(&dy)?.sum_all()?, y])
        },
        inputs,
        &[0, 1, 2, 3, 4, 5, 6],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

/// Sums `parts` over its axis `axis` of size `k` (the per-block partial sums MLX adds).
fn sum_parts(parts: &[f32], outer: usize, k: usize, inner: usize) -> Vec<f32> {
    let mut out = vec![0f32; outer * inner];
    for o in 0..outer {
        for j in 0..k {
            for x in 0..inner {
                out[o * inner + x] += parts[(o * k + j) * inner + x];
            }
        }
    }
    out
}

#[test]
fn fused_mamba3_scan_kernels_match_autodiff_of_the_recurrence() {
    for case in [
        // a partial block (4 of 32 channels) and a partial checkpoint chunk
        Case {
            batch: 2,
            seq: 37,
            inner: 12,
            groups: 3,
            state: 8,
            chunk: 8,
        },
        // five channel blocks per group, the last partial; decays below the floor (−16)
        Case {
            batch: 1,
            seq: 18,
            inner: 72,
            groups: 1,
            state: 16,
            chunk: 4,
        },
        // two pairs per channel, two groups of 40 channels
        Case {
            batch: 1,
            seq: 20,
            inner: 80,
            groups: 2,
            state: 4,
            chunk: 16,
        },
        // one pair (no shuffles), one step past a checkpoint
        Case {
            batch: 1,
            seq: 17,
            inner: 6,
            groups: 2,
            state: 2,
            chunk: 8,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sizes = case.sizes();
        let names = ["u", "delta", "lambda", "theta", "b", "c", "a", "dy"];
        let ranges = [
            (-1.0, 1.0),
            (0.01, 2.0),
            (0.0, 1.0),
            (-2.0, 2.0),
            (-1.0, 1.0),
            (-1.0, 1.0),
            (-12.0, -0.5),
            (-1.0, 1.0),
        ];
        let host: Vec<Vec<f32>> = (0..8)
            .map(|k| values(sizes[k], 61 + k as u64, ranges[k].0, ranges[k].1))
            .collect();
        for (name, x) in names.iter().zip(&host) {
            write(dir.path(), &format!("{name}.bin"), x);
        }
        compile_and_run(dir.path(), &case.program());

        let Case {
            batch: b,
            seq: t,
            inner: i,
            groups: g,
            state: n,
            chunk,
        } = case;
        let shapes: [Vec<usize>; 8] = [
            vec![b, t, i],
            vec![b, t, i],
            vec![b, t, i],
            vec![b, t, i, n / 2],
            vec![b, t, g, n],
            vec![b, t, g, n],
            vec![i, n],
            vec![b, t, i],
        ];
        let arrays: Vec<Array> = host
            .iter()
            .zip(&shapes)
            .map(|(v, s)| Array::from_f32(v, s).unwrap())
            .collect();
        let floor = -64.0 / chunk as f32;
        let (want_y, want) = reference(&arrays[..7], &arrays[7], floor);
        let label = format!("{case:?}");
        let got = |name: &str| read(dir.path(), &format!("{name}.out"));
        assert_close("y", &got("y"), &want_y, 1e-4, &label);
        for (k, name) in ["du", "ddelta", "dlambda", "dtheta"].iter().enumerate() {
            assert_close(name, &got(name), &want[k], 1e-4, &label);
        }
        let cb = case.cblocks();
        let db = sum_parts(&got("db"), b * t * g, cb, n);
        let dc = sum_parts(&got("dc"), b * t * g, cb, n);
        assert_close("db", &db, &want[4], 1e-4, &label);
        assert_close("dc", &dc, &want[5], 1e-4, &label);
        let da = sum_parts(&got("da"), 1, b, i * n);
        assert_close("da", &da, &want[6], 1e-4, &label);
    }
}

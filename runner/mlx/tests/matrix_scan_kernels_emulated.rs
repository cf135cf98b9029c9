//! The fused matrix-state scan CUDA kernels (`src/matrix_scans.cpp`: gated linear attention and the
//! gated delta rule), run on the CPU under the CUDA emulation of `emulation/mod.rs`. The output and
//! every gradient must equal MLX autodiff through the step-by-step recurrence. The same kernels run
//! for real in the trainer's GPU tests.

mod emulation;

use emulation::{
    PRELUDE, assert_close, compile_and_run, constant, kernel_source, read, values, write,
};
use mixsweep_mlx::{Array, Dtype, value_and_grad};

const KERNELS: &str = include_str!("../src/matrix_scans.cpp");

/// One problem: batch, sequence, heads, key and value sizes, and the chunk that sets the floor.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    seq: usize,
    heads: usize,
    dk: usize,
    dv: usize,
    chunk: usize,
}

impl Case {
    fn lanes(&self) -> usize {
        self.dk.min(32)
    }
    fn threads(&self) -> usize {
        constant(KERNELS, "kElements") / (self.dk / self.lanes())
    }
    fn groups(&self) -> usize {
        let columns = self.threads() / self.lanes();
        self.dv.div_ceil(columns)
    }
    fn keys(&self) -> usize {
        self.batch * self.seq * self.heads * self.dk
    }
    fn vals(&self) -> usize {
        self.batch * self.seq * self.heads * self.dv
    }

    /// The template constants MLX would inject, as C++.
    fn constants(&self) -> String {
        let Case {
            seq,
            heads,
            dk,
            dv,
            chunk,
            ..
        } = *self;
        format!(
            "  constexpr int SEQ = {seq}; constexpr int HEADS = {heads}; constexpr int DK = {dk};\n  \
             constexpr int DV = {dv}; constexpr int LANES = {lanes}; constexpr int PER = {per};\n  \
             constexpr int CKPT = {ckpt}; constexpr int CHUNK = {chunk}; constexpr int THREADS = {threads};\n",
            lanes = self.lanes(),
            per = dk / self.lanes(),
            ckpt = constant(KERNELS, "kCheckpoint"),
            threads = self.threads(),
        )
    }

    /// The C++ that declares the state-sized buffers every program uses (after `load`ing inputs).
    fn buffers(&self) -> String {
        let chunks = self.seq.div_ceil(constant(KERNELS, "kCheckpoint"));
        format!(
            "  const size_t keys = {keys}, vals = {vals}, rows = {rows}, parts = rows * {groups} * {dk};\n\
               auto q = load(\"q.bin\", keys), k = load(\"k.bin\", keys);\n\
               auto v = load(\"v.bin\", vals), dout = load(\"do.bin\", vals);\n\
               std::vector<float> o(vals, NAN), ck({bh} * {chunks} * {dv} * {dk}, NAN), dv(vals, NAN),\n\
                   dq(parts, NAN), dk(parts, NAN);\n\
               std::vector<float> sq(keys, 0.0f), sk(keys, 0.0f);\n",
            keys = self.keys(),
            vals = self.vals(),
            rows = self.batch * self.seq * self.heads,
            groups = self.groups(),
            dk = self.dk,
            dv = self.dv,
            bh = self.batch * self.heads,
        )
    }

    /// gla's kernels as one C++ program for this case.
    fn gla_program(&self) -> String {
        let (threads, groups, dk) = (self.threads(), self.groups(), self.dk);
        let constants = self.constants();
        format!(
            "#define THREADS_PER_BLOCK {threads}\n{PRELUDE}{header}\n\
             void forward(const float* q, const float* k, const float* v, const float* g, float* o,\n\
                          float* checkpoints) {{\n{constants}{forward}}}\n\
             void backward(const float* q, const float* k, const float* v, const float* g,\n\
                           const float* checkpoints, const float* dout, float* dv, float* dq_part,\n\
                           float* dk_part, float* dg_part) {{\n{constants}{backward}}}\n\
             int main() {{\n{buffers}\
               auto g = load(\"g.bin\", keys);\n\
               std::vector<float> dg(parts, NAN), sg(keys, 0.0f);\n\
               launch({blocks}, [&] {{ forward(q.data(), k.data(), v.data(), g.data(), o.data(), ck.data()); }});\n\
               launch({blocks}, [&] {{ backward(q.data(), k.data(), v.data(), g.data(), ck.data(), dout.data(),\n\
                                                dv.data(), dq.data(), dk.data(), dg.data()); }});\n\
               for (size_t r = 0; r < rows; ++r) for (int p = 0; p < {groups}; ++p) for (int d = 0; d < {dk}; ++d) {{\n\
                 sq[r * {dk} + d] += dq[(r * {groups} + p) * {dk} + d];\n\
                 sk[r * {dk} + d] += dk[(r * {groups} + p) * {dk} + d];\n\
                 sg[r * {dk} + d] += dg[(r * {groups} + p) * {dk} + d];\n\
               }}\n\
               save(\"o.out\", o); save(\"dq.out\", sq); save(\"dk.out\", sk); save(\"dv.out\", dv);\n\
               save(\"dg.out\", sg);\n\
             }}\n",
            header = kernel_source(KERNELS, "kHeader"),
            forward = kernel_source(KERNELS, "kGlaForward"),
            backward = kernel_source(KERNELS, "kGlaBackward"),
            buffers = self.buffers(),
            blocks = self.batch * self.heads * groups,
        )
    }

    /// The delta rule's kernels as one C++ program for this case.
    fn delta_program(&self) -> String {
        let (threads, groups, dk) = (self.threads(), self.groups(), self.dk);
        let constants = self.constants();
        format!(
            "#define THREADS_PER_BLOCK {threads}\n{PRELUDE}{header}\n\
             void forward(const float* q, const float* k, const float* v, const float* beta,\n\
                          const float* log_a, float* o, float* checkpoints) {{\n{constants}{forward}}}\n\
             void backward(const float* q, const float* k, const float* v, const float* beta,\n\
                           const float* log_a, const float* checkpoints, const float* dout, float* dv,\n\
                           float* dq_part, float* dk_part, float* da_part, float* db_part) {{\n\
                           {constants}{backward}}}\n\
             int main() {{\n{buffers}\
               auto beta = load(\"beta.bin\", rows), log_a = load(\"log_a.bin\", rows);\n\
               std::vector<float> da(rows * {groups}, NAN), db(rows * {groups}, NAN), sa(rows, 0.0f),\n\
                   sb(rows, 0.0f);\n\
               launch({blocks}, [&] {{ forward(q.data(), k.data(), v.data(), beta.data(), log_a.data(), o.data(),\n\
                                               ck.data()); }});\n\
               launch({blocks}, [&] {{ backward(q.data(), k.data(), v.data(), beta.data(), log_a.data(), ck.data(),\n\
                                                dout.data(), dv.data(), dq.data(), dk.data(), da.data(),\n\
                                                db.data()); }});\n\
               for (size_t r = 0; r < rows; ++r) for (int p = 0; p < {groups}; ++p) {{\n\
                 sa[r] += da[r * {groups} + p] * std::exp(log_a[r]);\n\
                 sb[r] += db[r * {groups} + p];\n\
                 for (int d = 0; d < {dk}; ++d) {{\n\
                   sq[r * {dk} + d] += dq[(r * {groups} + p) * {dk} + d];\n\
                   sk[r * {dk} + d] += dk[(r * {groups} + p) * {dk} + d];\n\
                 }}\n\
               }}\n\
               save(\"o.out\", o); save(\"dq.out\", sq); save(\"dk.out\", sk); save(\"dv.out\", dv);\n\
               save(\"dbeta.out\", sb); save(\"dlog_a.out\", sa);\n\
             }}\n",
            header = kernel_source(KERNELS, "kHeader"),
            forward = kernel_source(KERNELS, "kDeltaForward"),
            backward = kernel_source(KERNELS, "kDeltaBackward"),
            buffers = self.buffers(),
            blocks = self.batch * self.heads * groups,
        )
    }
}

/// Reference: `S_t = max(g_t, e^floor) S_{t−1} + k_t v_tᵀ`, `o_t = S_tᵀ q_t` one step at a time in
/// MLX ops, differentiated by MLX. Returns `o` and the gradients of `Σ o ⊙ dout` in q, k, v, g.
fn gla_reference(inputs: &[Array], dout: &Array, floor: f32) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dout = dout.clone();
    let (values, grads) = value_and_grad(
        move |x| {
            let (q, k, v, g) = (&x[0], &x[1], &x[2], &x[3]);
            let (b, t, h, dk, dv) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.dim(3));
            let min_decay = Array::scalar(floor.exp(), Dtype::F32)?;
            let mut s = Array::zeros(&[b, h, dk, dv], Dtype::F32)?;
            let mut outs = vec![];
            for step in 0..t {
                let at = |m: &Array, shape: &[i32]| m.slice_axis(1, step, step + 1)?.reshape(shape);
                let (b3, h3, k3, v3) = (b as i32, h as i32, dk as i32, dv as i32);
                let decay = at(g, &[b3, h3, k3, 1])?.maximum(&min_decay)?;
                let kv = at(k, &[b3, h3, k3, 1])?.mul(&at(v, &[b3, h3, 1, v3])?)?;
                s = decay.mul(&s)?.add(&kv)?;
                let read = s.mul(&at(q, &[b3, h3, k3, 1])?)?.sum(&[2], false)?;
                outs.push(read.expand_dims(1)?); // [B, 1, H, dv]
            }
            let refs: Vec<&Array> = outs.iter().collect();
            let o = mixsweep_mlx::concatenate(&refs, 1)?;
            Ok(vec![o.mul(&dout)?.sum_all()?, o])
        },
        inputs,
        &[0, 1, 2, 3],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn fused_gla_kernels_match_autodiff_of_the_recurrence() {
    // d_k 32 (one warp of rows, four columns per block, a partial column block: dv 10), d_k 8
    // (sixteen columns per block), d_k 64 (two rows per thread); partial last checkpoint chunks;
    // decays below the floor (g from 0.01, floor e^{-64/chunk} up to e^{-2}).
    let cases = [
        Case {
            batch: 2,
            seq: 37,
            heads: 2,
            dk: 32,
            dv: 10,
            chunk: 32,
        },
        Case {
            batch: 1,
            seq: 20,
            heads: 3,
            dk: 8,
            dv: 16,
            chunk: 64,
        },
        Case {
            batch: 1,
            seq: 18,
            heads: 1,
            dk: 64,
            dv: 3,
            chunk: 16,
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let q = values(case.keys(), 1, -1.0, 1.0);
        let k = values(case.keys(), 2, -1.0, 1.0);
        let g = values(case.keys(), 3, 0.01, 1.0);
        let v = values(case.vals(), 4, -1.0, 1.0);
        let dout = values(case.vals(), 5, -1.0, 1.0);
        for (name, x) in [
            ("q.bin", &q),
            ("k.bin", &k),
            ("g.bin", &g),
            ("v.bin", &v),
            ("do.bin", &dout),
        ] {
            write(dir.path(), name, x);
        }
        compile_and_run(dir.path(), &case.gla_program());

        let (b, t, h) = (case.batch, case.seq, case.heads);
        let arr = |x: &[f32], last: usize| Array::from_f32(x, &[b, t, h, last]).unwrap();
        let inputs = [
            arr(&q, case.dk),
            arr(&k, case.dk),
            arr(&v, case.dv),
            arr(&g, case.dk),
        ];
        let floor = -64.0 / case.chunk as f32;
        let (want_o, want) = gla_reference(&inputs, &arr(&dout, case.dv), floor);
        let label = format!("{case:?}");
        assert_close("o", &read(dir.path(), "o.out"), &want_o, 1e-4, &label);
        for (name, w) in ["dq", "dk", "dv", "dg"].iter().zip(&want) {
            assert_close(
                name,
                &read(dir.path(), &format!("{name}.out")),
                w,
                1e-4,
                &label,
            );
        }
    }
}

/// Reference: `w = S_{t−1}ᵀ k_t`, `S_t = a_t S_{t−1} + k_t (β_t (v_t − a_t w))ᵀ`, `o_t = S_tᵀ q_t`
/// one step at a time in MLX ops, differentiated by MLX. Returns `o` and the gradients of
/// `Σ o ⊙ dout` in q, k, v, β and log a.
fn delta_reference(inputs: &[Array], dout: &Array) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dout = dout.clone();
    let (values, grads) = value_and_grad(
        move |x| {
            let (q, k, v, beta, log_a) = (&x[0], &x[1], &x[2], &x[3], &x[4]);
            let (b, t, h, dk, dv) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.dim(3));
            let mut s = Array::zeros(&[b, h, dk, dv], Dtype::F32)?;
            let mut outs = vec![];
            for step in 0..t {
                let at = |m: &Array, shape: &[i32]| m.slice_axis(1, step, step + 1)?.reshape(shape);
                let (b3, h3, k3, v3) = (b as i32, h as i32, dk as i32, dv as i32);
                let a = at(log_a, &[b3, h3, 1, 1])?.exp()?;
                let kt = at(k, &[b3, h3, k3, 1])?;
                let w = s.mul(&kt)?.sum(&[2], true)?; // [B, H, 1, dv]
                let resid = at(v, &[b3, h3, 1, v3])?.sub(&a.mul(&w)?)?;
                let d = at(beta, &[b3, h3, 1, 1])?.mul(&resid)?;
                s = a.mul(&s)?.add(&kt.mul(&d)?)?;
                let read = s.mul(&at(q, &[b3, h3, k3, 1])?)?.sum(&[2], false)?;
                outs.push(read.expand_dims(1)?); // [B, 1, H, dv]
            }
            let refs: Vec<&Array> = outs.iter().collect();
            let o = mixsweep_mlx::concatenate(&refs, 1)?;
            Ok(vec![o.mul(&dout)?.sum_all()?, o])
        },
        inputs,
        &[0, 1, 2, 3, 4],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn fused_delta_kernels_match_autodiff_of_the_recurrence() {
    // the same layouts as the gla test; keys L2-normalised per head as gated_deltanet feeds them
    let cases = [
        Case {
            batch: 2,
            seq: 37,
            heads: 2,
            dk: 32,
            dv: 10,
            chunk: 16,
        },
        Case {
            batch: 1,
            seq: 20,
            heads: 3,
            dk: 8,
            dv: 16,
            chunk: 16,
        },
        Case {
            batch: 1,
            seq: 18,
            heads: 1,
            dk: 64,
            dv: 3,
            chunk: 16,
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let rows = case.batch * case.seq * case.heads;
        let q = values(case.keys(), 11, -1.0, 1.0);
        let mut k = values(case.keys(), 12, -1.0, 1.0);
        for key in k.chunks_mut(case.dk) {
            let norm = key.iter().map(|x| x * x).sum::<f32>().sqrt();
            key.iter_mut().for_each(|x| *x /= norm);
        }
        let v = values(case.vals(), 13, -1.0, 1.0);
        let beta = values(rows, 14, 0.0, 1.0);
        let log_a = values(rows, 15, -2.0, 0.0);
        let dout = values(case.vals(), 16, -1.0, 1.0);
        for (name, x) in [
            ("q.bin", &q),
            ("k.bin", &k),
            ("v.bin", &v),
            ("beta.bin", &beta),
            ("log_a.bin", &log_a),
            ("do.bin", &dout),
        ] {
            write(dir.path(), name, x);
        }
        compile_and_run(dir.path(), &case.delta_program());

        let (b, t, h) = (case.batch, case.seq, case.heads);
        let arr = |x: &[f32], s: &[usize]| Array::from_f32(x, s).unwrap();
        let inputs = [
            arr(&q, &[b, t, h, case.dk]),
            arr(&k, &[b, t, h, case.dk]),
            arr(&v, &[b, t, h, case.dv]),
            arr(&beta, &[b, t, h]),
            arr(&log_a, &[b, t, h]),
        ];
        let (want_o, want) = delta_reference(&inputs, &arr(&dout, &[b, t, h, case.dv]));
        let label = format!("{case:?}");
        assert_close("o", &read(dir.path(), "o.out"), &want_o, 1e-4, &label);
        for (name, w) in ["dq", "dk", "dv", "dbeta", "dlog_a"].iter().zip(&want) {
            assert_close(
                name,
                &read(dir.path(), &format!("{name}.out")),
                w,
                1e-4,
                &label,
            );
        }
    }
}

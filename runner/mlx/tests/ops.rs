//! Each operation against hand-computed values, errors surfacing as `Err`, transforms and compile.

use mixsweep_mlx::{Array, Compiled, Dtype, concatenate, random, value_and_grad, vjp, where_};

fn arr(v: &[f32], shape: &[usize]) -> Array {
    Array::from_f32(v, shape).unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w} (all: {got:?})"
        );
    }
}

#[test]
fn elementwise_ops_match_hand_values() {
    let a = arr(&[1.0, -2.0, 0.5], &[3]);
    let b = arr(&[2.0, 4.0, -1.0], &[3]);
    close(
        &a.add(&b).unwrap().to_vec_f32().unwrap(),
        &[3.0, 2.0, -0.5],
        1e-6,
    );
    close(
        &a.sub(&b).unwrap().to_vec_f32().unwrap(),
        &[-1.0, -6.0, 1.5],
        1e-6,
    );
    close(
        &a.mul(&b).unwrap().to_vec_f32().unwrap(),
        &[2.0, -8.0, -0.5],
        1e-6,
    );
    close(
        &a.div(&b).unwrap().to_vec_f32().unwrap(),
        &[0.5, -0.5, -0.5],
        1e-6,
    );
    close(
        &a.maximum(&b).unwrap().to_vec_f32().unwrap(),
        &[2.0, 4.0, 0.5],
        1e-6,
    );
    close(
        &a.minimum(&b).unwrap().to_vec_f32().unwrap(),
        &[1.0, -2.0, -1.0],
        1e-6,
    );
    close(
        &a.neg().unwrap().to_vec_f32().unwrap(),
        &[-1.0, 2.0, -0.5],
        1e-6,
    );
    close(
        &a.exp().unwrap().to_vec_f32().unwrap(),
        &[1f32.exp(), (-2f32).exp(), 0.5f32.exp()],
        1e-6,
    );
    close(
        &b.abs().unwrap().log().unwrap().to_vec_f32().unwrap(),
        &[2f32.ln(), 4f32.ln(), 0.0],
        1e-6,
    );
    close(
        &b.abs().unwrap().log1p().unwrap().to_vec_f32().unwrap(),
        &[3f32.ln(), 5f32.ln(), 2f32.ln()],
        1e-6,
    );
    close(
        &b.abs().unwrap().sqrt().unwrap().to_vec_f32().unwrap(),
        &[2f32.sqrt(), 2.0, 1.0],
        1e-6,
    );
    close(
        &b.abs().unwrap().rsqrt().unwrap().to_vec_f32().unwrap(),
        &[1.0 / 2f32.sqrt(), 0.5, 1.0],
        1e-6,
    );
    close(
        &a.square().unwrap().to_vec_f32().unwrap(),
        &[1.0, 4.0, 0.25],
        1e-6,
    );
    close(
        &a.tanh().unwrap().to_vec_f32().unwrap(),
        &[1f32.tanh(), (-2f32).tanh(), 0.5f32.tanh()],
        1e-6,
    );
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    close(
        &a.sigmoid().unwrap().to_vec_f32().unwrap(),
        &[sig(1.0), sig(-2.0), sig(0.5)],
        1e-6,
    );
    // erf(1) = 0.8427007929, erf(-2) = -0.995322265, erf(0.5) = 0.5204998778
    close(
        &a.erf().unwrap().to_vec_f32().unwrap(),
        &[0.842_700_8, -0.995_322_3, 0.520_499_9],
        1e-5,
    );
    close(
        &a.power(&arr(&[2.0, 3.0, 2.0], &[3]))
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        &[1.0, -8.0, 0.25],
        1e-6,
    );
    close(
        &a.clip(-1.0, 0.75).unwrap().to_vec_f32().unwrap(),
        &[0.75, -1.0, 0.5],
        1e-6,
    );
    close(
        &a.add_scalar(1.0).unwrap().to_vec_f32().unwrap(),
        &[2.0, -1.0, 1.5],
        1e-6,
    );
    close(
        &a.mul_scalar(2.0).unwrap().to_vec_f32().unwrap(),
        &[2.0, -4.0, 1.0],
        1e-6,
    );
    close(
        &a.sin().unwrap().to_vec_f32().unwrap(),
        &[1f32.sin(), (-2f32).sin(), 0.5f32.sin()],
        1e-6,
    );
    close(
        &a.cos().unwrap().to_vec_f32().unwrap(),
        &[1f32.cos(), (-2f32).cos(), 0.5f32.cos()],
        1e-6,
    );
    let c = a.greater(&b).unwrap();
    assert_eq!(c.dtype().unwrap(), Dtype::Bool);
    close(
        &where_(&c, &a, &b).unwrap().to_vec_f32().unwrap(),
        &[2.0, 4.0, 0.5],
        1e-6,
    );
    close(
        &a.logaddexp(&b).unwrap().to_vec_f32().unwrap(),
        &[
            (1f32.exp() + 2f32.exp()).ln(),
            ((-2f32).exp() + 4f32.exp()).ln(),
            (0.5f32.exp() + (-1f32).exp()).ln(),
        ],
        1e-6,
    );
}

#[test]
fn broadcasting_and_matmul() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = arr(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    let c = a.matmul(&b).unwrap();
    assert_eq!(c.shape(), vec![2, 2]);
    close(&c.to_vec_f32().unwrap(), &[4.0, 5.0, 10.0, 11.0], 1e-6);
    let row = arr(&[10.0, 20.0, 30.0], &[3]);
    close(
        &a.add(&row).unwrap().to_vec_f32().unwrap(),
        &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0],
        1e-6,
    );
    close(
        &a.t().unwrap().to_vec_f32().unwrap(),
        &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
        1e-6,
    );
}

#[test]
fn reductions_and_scans() {
    let a = arr(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    close(
        &a.sum(&[1], false).unwrap().to_vec_f32().unwrap(),
        &[6.0, 15.0],
        1e-6,
    );
    close(
        &a.mean(&[0], false).unwrap().to_vec_f32().unwrap(),
        &[2.5, 3.5, 4.5],
        1e-6,
    );
    close(
        &a.max(&[1], false).unwrap().to_vec_f32().unwrap(),
        &[3.0, 6.0],
        1e-6,
    );
    close(
        &a.min(&[1], false).unwrap().to_vec_f32().unwrap(),
        &[1.0, 4.0],
        1e-6,
    );
    close(&a.sum_all().unwrap().to_vec_f32().unwrap(), &[21.0], 1e-6);
    close(&a.mean_all().unwrap().to_vec_f32().unwrap(), &[3.5], 1e-6);
    let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
    close(
        &a.logsumexp(&[1], false).unwrap().to_vec_f32().unwrap(),
        &[lse, lse + 3.0],
        1e-6,
    );
    assert_eq!(
        a.argmax(1, false).unwrap().to_vec_i32().unwrap(),
        vec![2, 2]
    );
    close(
        &a.cumsum(1, false, true).unwrap().to_vec_f32().unwrap(),
        &[1.0, 3.0, 6.0, 4.0, 9.0, 15.0],
        1e-6,
    );
    close(
        &a.cumsum(1, false, false).unwrap().to_vec_f32().unwrap(),
        &[0.0, 1.0, 3.0, 0.0, 4.0, 9.0],
        1e-6,
    );
    close(
        &a.cumsum(1, true, true).unwrap().to_vec_f32().unwrap(),
        &[6.0, 5.0, 3.0, 15.0, 11.0, 6.0],
        1e-6,
    );
    let e: Vec<f32> = [1f32, 2.0, 3.0].iter().map(|x| (x - 3.0).exp()).collect();
    let s: f32 = e.iter().sum();
    close(
        &a.softmax(1, true).unwrap().to_vec_f32().unwrap()[..3],
        &[e[0] / s, e[1] / s, e[2] / s],
        1e-6,
    );
}

#[test]
fn shapes_slices_and_indexing() {
    let a = Array::arange(0.0, 12.0, 1.0, Dtype::F32)
        .unwrap()
        .reshape(&[3, 4])
        .unwrap();
    assert_eq!(a.shape(), vec![3, 4]);
    close(
        &a.slice_axis(1, 1, 3).unwrap().to_vec_f32().unwrap(),
        &[1.0, 2.0, 5.0, 6.0, 9.0, 10.0],
        1e-6,
    );
    close(
        &a.slice(&[0, 0], &[3, 4], &[2, 3])
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        &[0.0, 3.0, 8.0, 11.0],
        1e-6,
    );
    let idx = Array::from_i32(&[2, 0], &[2]).unwrap();
    close(
        &a.take(&idx, 0).unwrap().to_vec_f32().unwrap(),
        &[8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0],
        1e-6,
    );
    let cols = Array::from_i32(&[3, 0, 1], &[3, 1]).unwrap();
    close(
        &a.take_along_axis(&cols, 1).unwrap().to_vec_f32().unwrap(),
        &[3.0, 4.0, 9.0],
        1e-6,
    );
    let p = arr(&[1.0, 2.0], &[1, 2]).pad_axis(1, 2, 1, -1.0).unwrap();
    close(
        &p.to_vec_f32().unwrap(),
        &[-1.0, -1.0, 1.0, 2.0, -1.0],
        1e-6,
    );
    let c = concatenate(&[&arr(&[1.0], &[1, 1]), &arr(&[2.0, 3.0], &[1, 2])], 1).unwrap();
    close(&c.to_vec_f32().unwrap(), &[1.0, 2.0, 3.0], 1e-6);
    let e = arr(&[1.0, 2.0], &[2]).expand_dims(0).unwrap();
    assert_eq!(e.shape(), vec![1, 2]);
    assert_eq!(e.broadcast_to(&[3, 2]).unwrap().shape(), vec![3, 2]);
    let t = a.transpose(&[1, 0]).unwrap().contiguous().unwrap();
    close(&t.to_vec_f32().unwrap()[..3], &[0.0, 4.0, 8.0], 1e-6);
    let u16s = Array::from_u16(&[1, 65535], &[2]).unwrap();
    assert_eq!(
        u16s.astype(Dtype::I32).unwrap().to_vec_i32().unwrap(),
        vec![1, 65535]
    );
    let bf = arr(&[1.5, -2.25], &[2]).astype(Dtype::Bf16).unwrap();
    assert_eq!(bf.dtype().unwrap(), Dtype::Bf16);
    close(&bf.to_vec_f32().unwrap(), &[1.5, -2.25], 0.0);
}

#[test]
fn fast_kernels_match_formulas() {
    // rms_norm: x * rsqrt(mean(x^2)+eps) * w
    let x = arr(&[1.0, 2.0, 3.0, 4.0], &[1, 4]);
    let w = arr(&[1.0, 0.5, 2.0, 1.0], &[4]);
    let ms = (1.0 + 4.0 + 9.0 + 16.0) / 4.0;
    let r = 1.0 / (ms + 1e-5f32).sqrt();
    close(
        &x.rms_norm(Some(&w), 1e-5).unwrap().to_vec_f32().unwrap(),
        &[r, 2.0 * r * 0.5, 3.0 * r * 2.0, 4.0 * r],
        1e-5,
    );
    // layer_norm without affine: (x - mean)/sqrt(var + eps)
    let var = (2.25 + 0.25 + 0.25 + 2.25) / 4.0;
    let s = 1.0 / (var + 1e-5f32).sqrt();
    close(
        &x.layer_norm(None, None, 1e-5)
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        &[-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s],
        1e-5,
    );
    // rope, traditional (adjacent pairs): position 1 rotates (a,b) by angle 1*base^0 = 1 rad for pair 0
    let q = arr(&[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[1, 1, 2, 4]);
    let out = q.rope(4, true, 10000.0, 0).unwrap().to_vec_f32().unwrap();
    let f1 = 10000f32.powf(-2.0 / 4.0);
    close(
        &out,
        &[
            1.0,
            0.0,
            1.0,
            0.0,
            1f32.cos(),
            1f32.sin(),
            f1.cos(),
            f1.sin(),
        ],
        1e-5,
    );
    // rope, half rotation: pairs (x[i], x[i+2])
    let q2 = arr(&[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], &[1, 1, 2, 4]);
    let out2 = q2.rope(4, false, 10000.0, 0).unwrap().to_vec_f32().unwrap();
    close(
        &out2[4..],
        &[1f32.cos(), f1.cos(), 1f32.sin(), f1.sin()],
        1e-5,
    );
    // sdpa with causal mask: position 0 sees only itself; position 1 averages by softmax of scores.
    let q = arr(&[1.0, 0.0, 0.0, 1.0], &[1, 1, 2, 2]);
    let k = arr(&[1.0, 0.0, 1.0, 1.0], &[1, 1, 2, 2]);
    let v = arr(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let o = q
        .scaled_dot_product_attention(&k, &v, 0.5, true)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    // row 1: scores q1.k0*0.5 = 0, q1.k1*0.5 = 0.5
    let (e0, e1) = (0f32.exp(), 0.5f32.exp());
    let p1 = e1 / (e0 + e1);
    close(&o, &[1.0, 2.0, 1.0 + 2.0 * p1, 2.0 + 2.0 * p1], 1e-5);
    // grouped-query attention: 2 query heads share one kv head
    let q = arr(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], &[1, 2, 2, 2]);
    let o = q
        .scaled_dot_product_attention(&k, &v, 0.5, true)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    close(&o[4..], &[1.0, 2.0, 1.0 + 2.0 * p1, 2.0 + 2.0 * p1], 1e-5);
}

#[test]
fn random_is_keyed_and_deterministic() {
    let k = random::key(7).unwrap();
    let a = random::uniform(&[1000], Dtype::F32, &k)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let b = random::uniform(&[1000], Dtype::F32, &k)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_eq!(a, b);
    let mean: f32 = a.iter().sum::<f32>() / 1000.0;
    assert!((mean - 0.5).abs() < 0.05, "uniform mean {mean}");
    assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
    let n = random::normal(&[4000], Dtype::F32, &random::key(1).unwrap())
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let m: f32 = n.iter().sum::<f32>() / 4000.0;
    let var: f32 = n.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / 4000.0;
    assert!(
        m.abs() < 0.06 && (var - 1.0).abs() < 0.1,
        "normal mean {m} var {var}"
    );
    let keys = random::split(&k, 3).unwrap();
    assert_eq!(keys.shape(), vec![3, 2]);
    let bits = random::bernoulli(0.25, &[4000], &k)
        .unwrap()
        .astype(Dtype::F32)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let p: f32 = bits.iter().sum::<f32>() / 4000.0;
    assert!((p - 0.25).abs() < 0.03, "bernoulli rate {p}");
    let logits = arr(&[0.0, 100.0, 0.0], &[1, 3]);
    assert_eq!(
        random::categorical(&logits, -1, &k)
            .unwrap()
            .to_vec_i32()
            .unwrap(),
        vec![1]
    );
}

#[test]
fn mlx_exceptions_become_errors() {
    let a = arr(&[1.0, 2.0, 3.0], &[3]);
    let b = arr(&[1.0, 2.0], &[2]);
    let err = a.add(&b).unwrap_err();
    assert!(
        err.message.contains("broadcast"),
        "unexpected message: {}",
        err.message
    );
    let err = a.matmul(&b).unwrap_err();
    assert!(!err.message.is_empty());
    assert!(a.reshape(&[2, 2]).is_err());
    assert!(Array::from_f32(&[1.0, 2.0], &[3]).is_err());
}

#[test]
fn value_and_grad_of_a_closure() {
    // f(x, y) = sum(x^2 * y): df/dx = 2xy, df/dy = x^2
    let x = arr(&[1.0, 2.0], &[2]);
    let y = arr(&[3.0, -1.0], &[2]);
    let (vals, grads) = value_and_grad(
        |ins| Ok(vec![ins[0].square()?.mul(&ins[1])?.sum_all()?]),
        &[x, y],
        &[0, 1],
    )
    .unwrap();
    close(&vals[0].to_vec_f32().unwrap(), &[-1.0], 1e-6);
    close(&grads[0].to_vec_f32().unwrap(), &[6.0, -4.0], 1e-6);
    close(&grads[1].to_vec_f32().unwrap(), &[1.0, 4.0], 1e-6);
    let (_, cot) = vjp(
        |ins| Ok(vec![ins[0].mul_scalar(3.0)?]),
        &[arr(&[1.0], &[1])],
        &[arr(&[2.0], &[1])],
    )
    .unwrap();
    close(&cot[0].to_vec_f32().unwrap(), &[6.0], 1e-6);
}

#[test]
fn errors_inside_closures_propagate() {
    let x = arr(&[1.0, 2.0], &[2]);
    let err = value_and_grad(
        |_ins| Err(mixsweep_mlx::Error::new("boom from rust")),
        std::slice::from_ref(&x),
        &[0],
    )
    .unwrap_err();
    assert!(err.message.contains("boom from rust"), "{}", err.message);
    let err = value_and_grad(|_ins| panic!("panicked here"), &[x], &[0]).unwrap_err();
    assert!(err.message.contains("panicked here"), "{}", err.message);
}

#[test]
fn compiled_function_matches_eager_and_counts_one_trace() {
    use std::cell::Cell;
    use std::rc::Rc;
    let traces = Rc::new(Cell::new(0));
    let t = traces.clone();
    let mut f = Compiled::new(
        move |ins| {
            t.set(t.get() + 1);
            Ok(vec![ins[0].mul(&ins[1])?.add(&ins[0])?.exp()?])
        },
        false,
    )
    .unwrap();
    for i in 0..5 {
        let a = arr(&[i as f32, 1.0], &[2]);
        let b = arr(&[0.5, -0.5], &[2]);
        let out = f.call(&[a, b]).unwrap();
        let want = [
            (i as f32 * 0.5 + i as f32).exp(),
            (1.0f32 - 0.5 + 0.0).exp(),
        ];
        close(&out[0].to_vec_f32().unwrap(), &want, 1e-5);
    }
    assert_eq!(
        traces.get(),
        1,
        "the closure should be traced once for one input shape"
    );
    // Errors from a compiled call come back as Err, not aborts.
    let mut bad = Compiled::new(|ins| Ok(vec![ins[0].add(&ins[1])?]), false).unwrap();
    assert!(
        bad.call(&[arr(&[1.0, 2.0], &[2]), arr(&[1.0, 2.0, 3.0], &[3])])
            .is_err()
    );
}

#[test]
fn version_device_and_memory() {
    let v = mixsweep_mlx::version().unwrap();
    assert!(v.starts_with("0."), "version {v}");
    let d = mixsweep_mlx::device::select(None).unwrap();
    assert_eq!(mixsweep_mlx::device::default().unwrap(), d);
    let a = Array::ones(&[1024, 1024], Dtype::F32).unwrap();
    a.eval().unwrap();
    let s = mixsweep_mlx::memory::stats().unwrap();
    assert!(s.peak >= 4 * 1024 * 1024, "peak {}", s.peak);
    mixsweep_mlx::memory::set_cache_limit(1 << 30).unwrap();
    mixsweep_mlx::memory::clear_cache().unwrap();
}

//! Recurrences over time, all `h_t = a_t ⊙ h_{t-1} + u_t` with a diagonal decay, computed in
//! parallel chunks by the runner (never one call per step), and causal token mixing.

use super::{Rule, arity, numel};
use crate::ir::{Dim, Shape, show};
use serde::Serialize;

fn is_btd(s: &Shape) -> bool {
    s.len() == 3 && s[0] == Dim::Batch && s[1] == Dim::Seq && s[2].fixed().is_some()
}

fn need(ok: bool, what: &str, inputs: &[&Shape]) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "needs {what}; got {}",
            inputs
                .iter()
                .map(|s| show(s))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Per-head queries and keys `q, k [B, T, H, d_k]` with values `v [B, T, H, d_v]`.
fn is_heads_qkv(q: &Shape, k: &Shape, v: &Shape) -> bool {
    q.len() == 4
        && q[0] == Dim::Batch
        && q[1] == Dim::Seq
        && k == q
        && v.len() == 4
        && v[..3] == q[..3]
}

/// FLOPs of a matrix-state scan read by queries: `state_mads·d_k·d_v` per token and head for the
/// state update and read, and the chunkwise form's `L × L` terms.
fn matrix_scan_flops(inputs: &[Vec<usize>], state_mads: f64, chunk: usize) -> f64 {
    let (q, v) = (&inputs[0], &inputs[2]);
    let tokens_heads = (q[0] * q[1] * q[2]) as f64;
    let (dk, dv) = (q[3] as f64, v[3] as f64);
    tokens_heads * (state_mads * dk * dv + 2.0 * chunk as f64 * (dk + dv))
}

/// Causal depthwise convolution over time: `y_t = Σ_j w[j] · x_{t-K+1+j} + bias`; `x [B, T, C]`,
/// `w [K, C]`, `bias [C]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalConv;

impl Rule for CausalConv {
    fn name(&self) -> &'static str {
        "causal_conv"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 3, 3)?;
        let (x, w, b) = (inputs[0], inputs[1], inputs[2]);
        let c = x.last().copied();
        need(
            is_btd(x) && w.len() == 2 && w[1..] == [c.unwrap()] && *b == vec![c.unwrap()],
            "x [B, T, C], w [K, C], bias [C]",
            inputs,
        )?;
        Ok(vec![x.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        2.0 * numel(&inputs[0]) * inputs[1][0] as f64
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        (inputs[1][0] - 1) * inputs[1][1] // the last K − 1 inputs
    }
}

/// Mamba's selective scan: `x, delta [B, T, I]`, `a_log [I, N]` (A = -exp(a_log)), `b, c [B, T, N]`,
/// skip `d [I]`: `h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t`, `y_t = h_t · C_t + d ⊙ x_t`, in chunks of
/// `chunk` steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectiveScan {
    pub chunk: usize,
}

impl Rule for SelectiveScan {
    fn name(&self) -> &'static str {
        "selective_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 6, 6)?;
        let (x, dt, a, b, c, d) = (
            inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5],
        );
        let ok = is_btd(x)
            && dt == x
            && is_btd(b)
            && b == c
            && a.len() == 2
            && a[0] == x[2]
            && a[1] == b[2]
            && *d == vec![x[2]];
        need(
            ok,
            "x, delta [B, T, I], a_log [I, N], b, c [B, T, N], d [I]",
            inputs,
        )?;
        Ok(vec![x.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        // decay, input, state update and readout: ~6 multiply-adds per (token, channel, state)
        6.0 * numel(&inputs[0]) * inputs[2][1] as f64
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[2][0] * inputs[2][1] // h [I, N]
    }
}

/// mixlab's `scan`: a constant per-channel gate `g = σ(d)`, `h_t = g ⊙ h_{t-1} + (1 - g) ⊙ x_t`;
/// `x [B, T, D]`, `d [D]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatedScan {
    pub chunk: usize,
}

impl Rule for GatedScan {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        need(
            is_btd(inputs[0]) && *inputs[1] == vec![inputs[0][2]],
            "x [B, T, D] and decay [D]",
            inputs,
        )?;
        Ok(vec![inputs[0].clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        3.0 * numel(&inputs[0])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2]
    }
}

/// mixlab's `scan_tv`: a time-varying gate given directly, `h_t = g_t ⊙ h_{t-1} + (1 - g_t) ⊙ x_t`;
/// `x, g [B, T, D]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanTv {
    pub chunk: usize,
}

impl Rule for ScanTv {
    fn name(&self) -> &'static str {
        "scan_tv"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        need(
            is_btd(inputs[0]) && inputs[1] == inputs[0],
            "x, gate [B, T, D]",
            inputs,
        )?;
        Ok(vec![inputs[0].clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        3.0 * numel(&inputs[0])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2]
    }
}

/// A diagonal linear recurrence with an explicit decay and no input gate,
/// `h_t = a_t ⊙ h_{t-1} + u_t`; `u [B, T, D]`, decay `a [D]` (constant) or `[B, T, D]`, in `(0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecayScan {
    pub chunk: usize,
}

impl Rule for DecayScan {
    fn name(&self) -> &'static str {
        "decay_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (u, a) = (inputs[0], inputs[1]);
        need(
            is_btd(u) && (a == u || *a == vec![u[2]]),
            "u [B, T, D] and decay [D] or [B, T, D]",
            inputs,
        )?;
        Ok(vec![u.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        2.0 * numel(&inputs[0])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2]
    }
}

/// The max-plus recurrence of mLSTM's stabiliser, `m_t = max(m_{t-1} + f_t, i_t)` from `m_{-1} = 0`;
/// `f, i [B, T, D]` (log forget gate and input gate pre-activations).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaxPlusScan;

impl Rule for MaxPlusScan {
    fn name(&self) -> &'static str {
        "max_plus_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        need(
            is_btd(inputs[0]) && inputs[1] == inputs[0],
            "log forget gate and input gate [B, T, D]",
            inputs,
        )?;
        Ok(vec![inputs[0].clone()])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2]
    }
}

/// mixlab's `matrix_scan`: matrix states `H_t = g_t[:, None] ⊙ H_{t-1} + U_t`; `u [B, T, Da, Db]`,
/// `g [B, T, Da]`; returns every `H_t`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixScan {
    pub chunk: usize,
}

impl Rule for MatrixScan {
    fn name(&self) -> &'static str {
        "matrix_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (u, g) = (inputs[0], inputs[1]);
        let ok = u.len() == 4
            && u[0] == Dim::Batch
            && u[1] == Dim::Seq
            && g.len() == 3
            && g[..] == u[..3];
        need(ok, "u [B, T, Da, Db] and gate [B, T, Da]", inputs)?;
        Ok(vec![u.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        2.0 * numel(&inputs[0])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2] * inputs[0][3]
    }
}

/// Gated linear attention's recurrence read by queries: per head a `[d_k, d_v]` state
/// `S_t = diag(g_t) S_{t−1} + k_t v_tᵀ`, output `o_t = S_tᵀ q_t`; `q, k, g [B, T, H, d_k]` (decay `g`
/// in `(0, 1]`), `v [B, T, H, d_v]`; output `[B, T, H, d_v]`. The same function as a `matrix_scan`
/// followed by a read with `q`, computed chunkwise (states only at chunk boundaries).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlaScan {
    pub chunk: usize,
}

impl Rule for GlaScan {
    fn name(&self) -> &'static str {
        "gla_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 4, 4)?;
        let (q, k, v, g) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let ok = is_heads_qkv(q, k, v) && g == q;
        need(
            ok,
            "q, k, decay [B, T, H, d_k] and v [B, T, H, d_v]",
            inputs,
        )?;
        Ok(vec![v.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        matrix_scan_flops(inputs, 4.0, self.chunk)
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2] * inputs[0][3] * inputs[2][3] // [H, d_k, d_v]
    }
}

/// The gated delta rule (Gated DeltaNet): per head a `[d_k, d_v]` state
/// `S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ`, output `o_t = S_tᵀ q_t`; inputs
/// `q, k [B, T, H, d_k]`, `v [B, T, H, d_v]`, `beta [B, T, H]` and the log decay `log α [B, T, H]`
/// (≤ 0); output `[B, T, H, d_v]`. Computed chunkwise (WY form, `chunk` steps per chunk).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaScan {
    pub chunk: usize,
}

impl Rule for DeltaScan {
    fn name(&self) -> &'static str {
        "delta_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 5, 5)?;
        let (q, k, v, beta, g) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
        let ok = is_heads_qkv(q, k, v) && *beta == q[..3] && g == beta;
        need(
            ok,
            "q, k [B, T, H, d_k], v [B, T, H, d_v], beta and log decay [B, T, H]",
            inputs,
        )?;
        Ok(vec![v.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        // the delta rule's update reads the state once more than gla's (k_tᵀ S_{t−1})
        matrix_scan_flops(inputs, 6.0, self.chunk)
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2] * inputs[0][3] * inputs[2][3] // [H, d_k, d_v]
    }
}

/// Mamba-3's exponential-trapezoidal scan with a rotating state (`mamba3-canonical`): per channel
/// `i` and state pair `p`, the phase `φ_t = φ_{t−1} + Δ_t θ_t`, the group's `B_t, C_t` rotated by it
/// (`(a, b) -> (a cos φ + b sin φ, b cos φ − a sin φ)`), `v_t = B̃_t u_t`, and per state component
/// `s_t = e^{Δ_t A} s_{t−1} + (1 − λ_t) Δ_t e^{Δ_t A} v_{t−1} + λ_t Δ_t v_t`, `y_t = Σ_n s_t C̃_t`.
/// Inputs `u, delta, lambda [B, T, I]`, `theta [B, T, I, N/2]`, `b, c [B, T, G, N]` (group `g` serves
/// channels `g·I/G ..`), `a_log [I, N]` (`A = −exp(a_log)`); output `y [B, T, I]`. The decay
/// `e^{Δ A}` is floored per step at `e^{−64/chunk}` in the state update (as every chunked scan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mamba3Scan {
    pub chunk: usize,
}

impl Rule for Mamba3Scan {
    fn name(&self) -> &'static str {
        "mamba3_scan"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 7, 7)?;
        let (u, theta, b, a) = (inputs[0], inputs[3], inputs[4], inputs[6]);
        let fixed = |s: &Shape, k: usize| s.get(k).and_then(|d| d.fixed());
        let ok = is_btd(u)
            && inputs[1] == u
            && inputs[2] == u
            && theta.len() == 4
            && theta[..3] == u[..]
            && b.len() == 4
            && b[..2] == u[..2]
            && inputs[5] == b
            && a.len() == 2
            && a[0] == u[2]
            && a[1] == b[3]
            && match (fixed(u, 2), fixed(b, 2), fixed(b, 3), fixed(theta, 3)) {
                (Some(i), Some(g), Some(n), Some(p)) => {
                    g > 0 && i % g == 0 && n % 2 == 0 && p * 2 == n
                }
                _ => false,
            };
        need(
            ok,
            "u, delta, lambda [B, T, I], theta [B, T, I, N/2], b, c [B, T, G, N] (G divides I, \
             N even) and a_log [I, N]",
            inputs,
        )?;
        Ok(vec![u.clone()])
    }
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        // per (token, channel, state component): rotations of B and C, the input terms, the state
        // update and the read-out, ~10 multiply-adds
        10.0 * numel(&inputs[0]) * inputs[6][1] as f64
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        let (i, n) = (inputs[6][0], inputs[6][1]);
        i * (n / 2 + 2 * n) // the phase [I, N/2], the state and the last input v [I, N]
    }
}

/// The previous token's features: `y_t = x_{t-1}`, zeros at `t = 0` (RWKV's token shift).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenShift;

impl Rule for TokenShift {
    fn name(&self) -> &'static str {
        "token_shift"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        need(is_btd(inputs[0]), "x [B, T, D]", inputs)?;
        Ok(vec![inputs[0].clone()])
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        inputs[0][2]
    }
}

/// A bank of diagonal linear time-invariant complex SSMs read out to reals (S4D):
/// `s_t = λ ⊙ s_{t-1} + h_t` per channel `d` and pole `n` (`λ = decay·e^{iθ}`), and
/// `y_t = 2·Re(Σ_n C_n s_{t,n})`; `h [B, T, D]`, `decay, theta, c_re, c_im [D, P]`. Time-invariant, so
/// the runner trains it as a causal convolution with the kernel `K[d, k] = 2·Re(Σ_n C_n λ_n^k)`
/// computed once per call, and decodes it from the complex state `[B, D, P]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LtiConv;

impl Rule for LtiConv {
    fn name(&self) -> &'static str {
        "lti_conv"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 5, 5)?;
        let h = inputs[0];
        let p = inputs[1];
        let ok = is_btd(h)
            && p.len() == 2
            && p[0] == h[2]
            && p[1].fixed().is_some()
            && inputs[2..].iter().all(|s| *s == p);
        need(
            ok,
            "h [B, T, D] and decay, theta, c_re, c_im [D, P]",
            inputs,
        )?;
        Ok(vec![h.clone()])
    }
    /// The recurrence's multiply-adds, `6·D·P` per token (the function's cost, as scans are
    /// counted), not those of the Toeplitz matmul the runner trains it with.
    fn flops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> f64 {
        6.0 * numel(&inputs[0]) * inputs[1][1] as f64
    }
    fn decode_state(&self, inputs: &[Vec<usize>], _context: usize) -> usize {
        2 * inputs[1][0] * inputs[1][1] // the complex state, real and imaginary parts
    }
}

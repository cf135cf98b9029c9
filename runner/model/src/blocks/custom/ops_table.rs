//! mixlab's custom-block op names, their inputs, outputs and params, and how each becomes IR ops.

use super::{OpDecl, Symbols};
use crate::blocks::BlockCtx;
use crate::ir::{Builder, Dim, ValueId};
use crate::ops::{self, BinaryKind, NormKind, ScalarKind, UnaryKind};
use serde_json::Value;

pub struct Spec {
    /// The canonical name (for errors).
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub arity: std::ops::RangeInclusive<usize>,
    pub outputs: usize,
    pub params: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    aliases: &'static [&'static str],
    arity: std::ops::RangeInclusive<usize>,
    outputs: usize,
    params: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        aliases,
        arity,
        outputs,
        params,
    }
}

pub const TABLE: &[Spec] = &[
    spec("matmul", &[], 2..=2, 1, &[]),
    spec("add", &[], 2..=2, 1, &[]),
    spec("sub", &[], 2..=2, 1, &[]),
    spec("mul", &[], 2..=2, 1, &[]),
    spec("div", &[], 2..=2, 1, &[]),
    spec("scalar_mul", &[], 1..=1, 1, &["scalar"]),
    spec("where", &["select"], 3..=3, 1, &[]),
    spec("lt", &["less_than"], 1..=2, 1, &["scalar"]),
    spec("gt", &["greater_than"], 1..=2, 1, &["scalar"]),
    spec(
        "ge",
        &["gte", "greater_eq", "greater_equal"],
        1..=2,
        1,
        &["scalar"],
    ),
    spec(
        "le",
        &["lte", "less_eq", "less_equal"],
        1..=2,
        1,
        &["scalar"],
    ),
    spec("eq", &["equal"], 1..=2, 1, &["scalar"]),
    spec("min", &["minimum"], 1..=2, 1, &["scalar"]),
    spec("max", &["maximum"], 1..=2, 1, &["scalar"]),
    spec("sigmoid", &[], 1..=1, 1, &[]),
    spec("silu", &[], 1..=1, 1, &[]),
    spec("gelu", &[], 1..=1, 1, &[]),
    spec("relu", &[], 1..=1, 1, &[]),
    spec("tanh", &[], 1..=1, 1, &[]),
    spec("exp", &[], 1..=1, 1, &[]),
    spec("log", &[], 1..=1, 1, &[]),
    spec("sqrt", &[], 1..=1, 1, &[]),
    spec("rsqrt", &[], 1..=1, 1, &[]),
    spec("reciprocal", &[], 1..=1, 1, &[]),
    spec("abs", &[], 1..=1, 1, &[]),
    spec("square", &[], 1..=1, 1, &[]),
    spec("pow", &[], 1..=2, 1, &["exponent"]),
    spec("clamp", &[], 1..=1, 1, &["min", "max"]),
    spec("softmax", &[], 1..=1, 1, &["axis"]),
    spec("mean", &["mean_axis"], 1..=1, 1, &["axis"]),
    spec("arange", &[], 0..=0, 1, &["start", "end"]),
    spec("full", &[], 0..=0, 1, &["shape", "value"]),
    spec("reshape", &[], 1..=1, 1, &["shape"]),
    spec("transpose", &[], 1..=1, 1, &["axes"]),
    spec("slice", &[], 1..=1, 1, &["start", "end", "step", "axis"]),
    spec("concat", &[], 1..=8, 1, &["axis"]),
    spec("dropout", &[], 1..=1, 1, &["rate"]),
    spec("causal_mask", &[], 1..=1, 1, &["T", "window_size"]),
    spec("rmsnorm", &["rms_norm"], 2..=2, 1, &["eps"]),
    spec("layernorm", &["layer_norm"], 1..=3, 1, &["eps"]),
    spec("rope", &[], 2..=2, 2, &["T", "head_dim", "base"]),
    spec("embed", &[], 2..=2, 1, &[]),
    spec("outer", &[], 2..=2, 1, &[]),
    spec("scan", &[], 2..=2, 1, &["B", "T", "D"]),
    spec("scan_tv", &[], 2..=2, 1, &["B", "T", "D"]),
    spec("matrix_scan", &[], 2..=2, 1, &["B", "T", "Da", "Db"]),
];

pub fn find(name: &str) -> Option<&'static Spec> {
    TABLE
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

/// Every accepted op name (aliases included).
pub fn names() -> Vec<&'static str> {
    TABLE
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
        .collect()
}

fn num(op: &OpDecl, key: &str) -> Result<Option<f64>, String> {
    match op.params.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("param `{key}` must be a number, not {v}")),
    }
}

fn need(op: &OpDecl, key: &str) -> Result<f64, String> {
    num(op, key)?.ok_or_else(|| format!("{} needs param `{key}`", op.op))
}

fn int(op: &OpDecl, key: &str) -> Result<Option<i64>, String> {
    Ok(num(op, key)?.map(|f| f as i64))
}

type R = Result<Vec<ValueId>, String>;

fn one(r: Result<ValueId, crate::ir::BuildError>) -> R {
    r.map(|v| vec![v]).map_err(|e| e.message)
}

/// Reshapes a `[BT, ...]` value to `[B, T, ...]`, applies `f`, and flattens the result back.
fn per_sequence(
    b: &mut Builder,
    inputs: &[ValueId],
    name: &str,
    f: impl FnOnce(&mut Builder, &[ValueId]) -> Result<ValueId, crate::ir::BuildError>,
) -> R {
    let mut seq = vec![];
    for (i, &v) in inputs.iter().enumerate() {
        let s = b.shape(v).clone();
        if s.first() != Some(&Dim::Tokens) {
            return Err(format!(
                "input {i} must be [BT, ...] (a per-token value), got {}",
                crate::ir::show(&s)
            ));
        }
        let shape: Vec<Dim> = [Dim::Batch, Dim::Seq]
            .into_iter()
            .chain(s[1..].iter().copied())
            .collect();
        seq.push(
            b.reshape(&format!("{name}_in{i}"), v, shape)
                .map_err(|e| e.message)?,
        );
    }
    let y = f(b, &seq).map_err(|e| e.message)?;
    let s = b.shape(y).clone();
    let flat: Vec<Dim> = std::iter::once(Dim::Tokens)
        .chain(s[2..].iter().copied())
        .collect();
    one(b.reshape(name, y, flat))
}

/// Checks a `D`-like param against the actual width.
fn check_width(op: &OpDecl, key: &str, sym: &Symbols, actual: usize) -> Result<(), String> {
    match op.params.get(key) {
        None => Ok(()),
        Some(v) => match sym.dim(v)? {
            Dim::Fixed(n) if n != actual => {
                Err(format!("param {key}={n} but the input's width is {actual}"))
            }
            _ => Ok(()),
        },
    }
}

/// Emits the IR ops of one custom op.
pub fn emit(
    b: &mut Builder,
    op: &OpDecl,
    inputs: &[ValueId],
    sym: &Symbols,
    ctx: &BlockCtx<'_>,
) -> R {
    let spec = find(&op.op).expect("validated when parsed");
    let out = op.outputs[0].as_str();
    let unary = |b: &mut Builder, k: UnaryKind| one(b.unary(out, inputs[0], k));
    let binary = |b: &mut Builder, k: BinaryKind| one(b.op1(ops::Binary(k), inputs, out));
    // one input with `scalar`, or two inputs
    let compare = |b: &mut Builder, bk: BinaryKind, sk: ScalarKind| -> R {
        if inputs.len() == 2 {
            one(b.op1(ops::Binary(bk), inputs, out))
        } else {
            let v = need(op, "scalar")? as f32;
            one(b.scalar(out, inputs[0], sk, v))
        }
    };
    match spec.name {
        "matmul" => one(b.matmul(out, inputs[0], inputs[1])),
        "add" => binary(b, BinaryKind::Add),
        "sub" => binary(b, BinaryKind::Sub),
        "mul" => binary(b, BinaryKind::Mul),
        "div" => binary(b, BinaryKind::Div),
        "scalar_mul" => one(b.scalar(out, inputs[0], ScalarKind::Mul, need(op, "scalar")? as f32)),
        "where" => one(b.op1(ops::Where, inputs, out)),
        "lt" => compare(b, BinaryKind::Lt, ScalarKind::Lt),
        "gt" => compare(b, BinaryKind::Gt, ScalarKind::Gt),
        "ge" => compare(b, BinaryKind::Ge, ScalarKind::Ge),
        "le" => compare(b, BinaryKind::Le, ScalarKind::Le),
        "eq" => compare(b, BinaryKind::Eq, ScalarKind::Eq),
        "min" => compare(b, BinaryKind::Min, ScalarKind::Min),
        "max" => compare(b, BinaryKind::Max, ScalarKind::Max),
        "sigmoid" => unary(b, UnaryKind::Sigmoid),
        "silu" => unary(b, UnaryKind::Silu),
        "gelu" => unary(b, UnaryKind::GeluTanh),
        "relu" => unary(b, UnaryKind::Relu),
        "tanh" => unary(b, UnaryKind::Tanh),
        "exp" => unary(b, UnaryKind::Exp),
        "log" => unary(b, UnaryKind::Log),
        "sqrt" => unary(b, UnaryKind::Sqrt),
        "rsqrt" => unary(b, UnaryKind::Rsqrt),
        "reciprocal" => unary(b, UnaryKind::Reciprocal),
        "abs" => unary(b, UnaryKind::Abs),
        "square" => unary(b, UnaryKind::Square),
        "pow" if inputs.len() == 2 => binary(b, BinaryKind::Pow),
        "pow" => one(b.scalar(
            out,
            inputs[0],
            ScalarKind::Pow,
            need(op, "exponent")? as f32,
        )),
        "clamp" => {
            let (lo, hi) = (
                num(op, "min")?.unwrap_or(f64::MIN),
                num(op, "max")?.unwrap_or(f64::MAX),
            );
            one(b.op1(
                ops::Clamp {
                    min: lo as f32,
                    max: hi as f32,
                },
                inputs,
                out,
            ))
        }
        "softmax" => one(b.op1(
            ops::Softmax {
                axis: int(op, "axis")?.unwrap_or(-1),
            },
            inputs,
            out,
        )),
        "mean" => {
            let axis = int(op, "axis")?.ok_or("mean needs param `axis`")?;
            one(b.op1(ops::Mean { axis }, inputs, out))
        }
        "arange" => {
            let (start, end) = (
                int(op, "start")?.unwrap_or(0),
                int(op, "end")?.ok_or("arange needs param `end`")?,
            );
            one(b.op1(ops::Arange { start, end }, &[], out))
        }
        "full" => {
            let shape = sym.shape(op.params.get("shape").ok_or("full needs param `shape`")?)?;
            one(b.op1(
                ops::Full {
                    shape,
                    value: need(op, "value")? as f32,
                },
                &[],
                out,
            ))
        }
        "reshape" => {
            let shape = sym.shape(
                op.params
                    .get("shape")
                    .ok_or("reshape needs param `shape`")?,
            )?;
            one(b.reshape(out, inputs[0], shape))
        }
        "transpose" => {
            let axes = op
                .params
                .get("axes")
                .and_then(Value::as_array)
                .ok_or("transpose needs param `axes`, a list of axis numbers")?
                .iter()
                .map(|a| {
                    a.as_u64()
                        .map(|a| a as usize)
                        .ok_or("axes must be non-negative integers")
                })
                .collect::<Result<Vec<_>, _>>()?;
            one(b.transpose(out, inputs[0], &axes))
        }
        "slice" => {
            let s = ops::Slice {
                axis: int(op, "axis")?.unwrap_or(-1),
                start: int(op, "start")?.unwrap_or(0).max(0) as usize,
                end: int(op, "end")?.ok_or("slice needs param `end`")?.max(0) as usize,
                step: int(op, "step")?.unwrap_or(1).max(0) as usize,
            };
            one(b.op1(s, inputs, out))
        }
        "concat" => one(b.op1(
            ops::Concat {
                axis: int(op, "axis")?.unwrap_or(-1),
            },
            inputs,
            out,
        )),
        "dropout" => {
            let rate = num(op, "rate")?.unwrap_or(0.0) as f32;
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("dropout rate {rate} must be in [0, 1)"));
            }
            one(b.dropout(out, inputs[0], rate))
        }
        "causal_mask" => {
            let window = int(op, "window_size")?.unwrap_or(0).max(0) as usize;
            one(b.op1(ops::CausalMask { window }, inputs, out))
        }
        "rmsnorm" => {
            let eps = num(op, "eps")?.unwrap_or(1e-5) as f32;
            one(b.op1(
                ops::Norm {
                    kind: NormKind::Rms,
                    eps,
                },
                inputs,
                out,
            ))
        }
        "layernorm" => {
            if inputs.len() == 2 {
                return Err("layernorm takes [x] (no affine) or [x, scale, bias]".into());
            }
            let eps = num(op, "eps")?.unwrap_or(1e-5) as f32;
            one(b.op1(
                ops::Norm {
                    kind: NormKind::Layer,
                    eps,
                },
                inputs,
                out,
            ))
        }
        "rope" => {
            let base = num(op, "base")?.unwrap_or(10000.0) as f32;
            let mut outs = vec![];
            for (i, &v) in inputs.iter().enumerate() {
                let hd = b.width(v);
                let dims = int(op, "head_dim")?.map_or(hd, |h| h.max(0) as usize);
                let r = ops::Rope {
                    dims,
                    base,
                    adjacent_pairs: true,
                };
                outs.push(b.op1(r, &[v], &op.outputs[i]).map_err(|e| e.message)?);
            }
            Ok(outs)
        }
        "embed" => one(b.op1(ops::Embedding, &[inputs[0], inputs[1]], out)),
        "outer" => one(b.op1(ops::Outer, inputs, out)),
        "scan" => {
            check_width(op, "D", sym, b.width(inputs[0]))?;
            let chunk = ctx.dims.scan_chunk;
            let x = inputs[0];
            let s = b.shape(x).clone();
            if s.first() != Some(&Dim::Tokens) {
                return Err(format!(
                    "input 0 must be [BT, D], got {}",
                    crate::ir::show(&s)
                ));
            }
            let d = inputs[1];
            per_sequence(b, &[x], out, |b, seq| {
                b.op1(ops::GatedScan { chunk }, &[seq[0], d], "scan")
            })
        }
        "scan_tv" => {
            check_width(op, "D", sym, b.width(inputs[0]))?;
            let chunk = ctx.dims.scan_chunk;
            per_sequence(b, inputs, out, |b, seq| {
                b.op1(ops::ScanTv { chunk }, seq, "scan_tv")
            })
        }
        "matrix_scan" => {
            let chunk = ctx.dims.scan_chunk;
            per_sequence(b, inputs, out, |b, seq| {
                b.op1(ops::MatrixScan { chunk }, seq, "matrix_scan")
            })
        }
        other => Err(format!("op {other} has no lowering")),
    }
}

/// The op table of `docs/config.md` (kept in step by a test).
pub fn markdown_table() -> String {
    let mut out = String::from("| op | also spelled | inputs | params |\n|---|---|---|---|\n");
    for s in TABLE {
        let list = |xs: &[&str]| {
            if xs.is_empty() {
                "-".to_string()
            } else {
                xs.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
            }
        };
        let arity = if s.arity.start() == s.arity.end() {
            s.arity.start().to_string()
        } else {
            format!("{}-{}", s.arity.start(), s.arity.end())
        };
        out += &format!("| `{}` | {} | {arity} | {} |\n", s.name, list(s.aliases), list(s.params));
    }
    out
}

//! [`Trial`] and [`TrialId`]. A trial keeps a reference to its [`Variant`] (base config, axes, data)
//! and its point index, not its config: [`Trial::config`] rebuilds the config when asked, so a sweep of
//! a million trials stays small (about 100 bytes a trial).

use crate::path::ParamPath;
use crate::points::{Row, Space};
use crate::trial_id;
use mixsweep_model::ModelConfig;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// A trial id: 16 lowercase hex digits (the first 64 bits of a SHA-256), stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialId([u8; 16]);

impl TrialId {
    /// From 16 hex digits (more are cut, fewer are padded with `0`).
    pub fn from_hex(hex: &str) -> TrialId {
        let mut b = [b'0'; 16];
        for (d, s) in b.iter_mut().zip(hex.bytes()) {
            *d = s;
        }
        TrialId(b)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::ops::Deref for TrialId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for TrialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for TrialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<str> for TrialId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TrialId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for TrialId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl serde::Serialize for TrialId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One variant of a sweep with everything its trials need: the base config (sweep and variant `set`
/// applied), the sweep's `steps`, the point space, the ties, the data and its identity.
#[derive(Debug)]
pub(crate) struct Variant {
    pub name: Arc<str>,
    pub base_file: String,
    pub base: Value,
    pub steps: Option<usize>,
    pub space: Space,
    pub paths: HashMap<Arc<str>, ParamPath>,
    pub ties: Vec<(Arc<str>, ParamPath, String)>,
    pub train: Arc<str>,
    pub val: Option<Arc<str>>,
    pub data_id: String,
}

/// How tie values are obtained when a config is built.
pub(crate) enum Ties<'a> {
    /// Evaluate each tie expression on the config built so far.
    Evaluate,
    /// Set these values (the ones evaluated when the trial was made).
    Given(&'a [Value]),
}

impl Variant {
    /// A point's config without its seed, in the one order every path uses: base, point values,
    /// the sweep's `steps`, then ties. Returns the config and the tie values.
    pub fn build(
        &self,
        point: &Row,
        ties: Ties<'_>,
    ) -> Result<(Value, Vec<Value>), (Arc<str>, String)> {
        let mut cfg = self.base.clone();
        for (p, v) in point {
            self.paths[p].set(&mut cfg, v).map_err(|e| (p.clone(), e))?;
        }
        if let Some(steps) = self.steps {
            set_path(&mut cfg, "training.steps", Value::from(steps));
        }
        let mut values = Vec::with_capacity(self.ties.len());
        for (i, (p, path, expr)) in self.ties.iter().enumerate() {
            let v = match ties {
                Ties::Evaluate => crate::expr::evaluate(expr, &cfg)
                    .map_err(|e| (p.clone(), format!("tie.{p}: {e}")))?,
                Ties::Given(given) => given[i].clone(),
            };
            path.set(&mut cfg, &v)
                .map_err(|e| (p.clone(), format!("tie.{p}: {e}")))?;
            values.push(v);
        }
        Ok((cfg, values))
    }
}

/// Sets `training.steps` (a budget's steps).
pub(crate) fn set_steps(cfg: &mut Value, steps: usize) {
    set_path(cfg, "training.steps", Value::from(steps));
}

/// Sets the seed and normalises numbers (`4.0` is `4`): the last steps of every config.
pub(crate) fn finish_config(cfg: &mut Value, seed: u64) {
    set_path(cfg, "training.seed", Value::from(seed));
    normalise(cfg);
}

fn set_path(cfg: &mut Value, path: &str, v: Value) {
    static SEED: LazyLock<ParamPath> = LazyLock::new(|| ParamPath::parse("training.seed").unwrap());
    static STEPS: LazyLock<ParamPath> =
        LazyLock::new(|| ParamPath::parse("training.steps").unwrap());
    let p = match path {
        "training.seed" => &*SEED,
        "training.steps" => &*STEPS,
        _ => unreachable!("only built-in paths are set here"),
    };
    p.set(cfg, &v).expect("training.* can always be set");
}

fn normalise(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64() {
                *v = crate::points::number(f);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        Value::Object(m) => m.values_mut().for_each(normalise),
        _ => {}
    }
}

/// One trial: a concrete model config, its data, and its seed.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Content hash of (canonical config, data identity, seed, runner version).
    pub id: TrialId,
    pub seed: u64,
    pub params: usize,
    pub flops_per_token: f64,
    pub steps: usize,
    variant: Arc<Variant>,
    point: usize,
    /// The values the sweep's ties took for this trial, in tie order.
    ties: Box<[Value]>,
    /// The training FLOPs budget that set `steps` (`budget:` sweeps).
    pub budget: Option<f64>,
}

/// The name under which a trial's budget shows among its overrides (and in `results`).
pub const BUDGET_KEY: &str = "budget.flops";

impl PartialEq for Trial {
    fn eq(&self, other: &Trial) -> bool {
        self.id == other.id
    }
}

impl Trial {
    pub(crate) fn new(
        id: TrialId,
        seed: u64,
        counts: (usize, f64, usize),
        variant: Arc<Variant>,
        point: usize,
        ties: Vec<Value>,
    ) -> Trial {
        let (params, flops_per_token, steps) = counts;
        Trial {
            id,
            seed,
            params,
            flops_per_token,
            steps,
            variant,
            point,
            ties: ties.into_boxed_slice(),
            budget: None,
        }
    }

    /// This trial with the compute budget its steps were derived from.
    pub(crate) fn with_budget(mut self, budget: Option<f64>) -> Trial {
        self.budget = budget;
        self
    }

    /// A trial of one config on its own (outside any sweep): validated and counted; its id covers
    /// the config, `data_identity` and the config's seed.
    pub fn from_config(
        config: Value,
        variant: &str,
        train: &str,
        val: Option<&str>,
        data_identity: &str,
    ) -> Result<Trial, String> {
        let m = ModelConfig::from_value(&config).map_err(|e| e.to_string())?;
        let c = m.counts();
        let v = Variant {
            name: Arc::from(variant),
            base_file: String::new(),
            base: config.clone(),
            steps: None,
            space: Space::default(),
            paths: HashMap::new(),
            ties: vec![],
            train: Arc::from(train),
            val: val.map(Arc::from),
            data_id: data_identity.into(),
        };
        Ok(Trial::new(
            trial_id(&config, data_identity, m.training.seed),
            m.training.seed,
            (c.params, c.train_flops_per_token, m.training.steps),
            Arc::new(v),
            0,
            vec![],
        ))
    }

    pub fn variant(&self) -> &str {
        &self.variant.name
    }

    /// The train glob (absolute, or a URL).
    pub fn train(&self) -> &str {
        &self.variant.train
    }

    pub fn val(&self) -> Option<&str> {
        self.variant.val.as_deref()
    }

    /// The swept values of this trial, as `path=value` pairs (grid, zip, random, then ties).
    pub fn overrides(&self) -> Row {
        let mut row = self.variant.space.point(self.point);
        row.extend(
            self.variant
                .ties
                .iter()
                .zip(self.ties.iter())
                .map(|((p, _, _), v)| (p.clone(), v.clone())),
        );
        if let Some(b) = self.budget {
            row.push((Arc::from(BUDGET_KEY), crate::points::number(b)));
        }
        row
    }

    pub fn overrides_text(&self) -> String {
        fmt_overrides(&self.overrides())
    }

    /// The overrides as a JSON object (`path: value`).
    pub fn overrides_json(&self) -> serde_json::Map<String, Value> {
        self.overrides()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// The complete model config the runner receives.
    pub fn config(&self) -> Value {
        let point = self.variant.space.point(self.point);
        let (mut cfg, _) = self
            .variant
            .build(&point, Ties::Given(&self.ties))
            .expect("the overrides applied when the trial was made");
        finish_config(&mut cfg, self.seed);
        if self.budget.is_some() {
            set_steps(&mut cfg, self.steps);
        }
        cfg
    }

    /// The trial's line in `trials.jsonl` and `plan --json` (without the config).
    pub fn listing(&self) -> Value {
        serde_json::json!({
            "id": self.id, "variant": self.variant(), "seed": self.seed, "params": self.params,
            "flops_per_token": self.flops_per_token, "steps": self.steps,
            "budget_flops": self.budget,
            "data_id": self.variant.data_id,
            "train": self.train(), "val": self.val(),
            "overrides": self.overrides_json(),
        })
    }
}

pub(crate) fn fmt_overrides(overrides: &[(Arc<str>, Value)]) -> String {
    overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_strings() {
        let id = TrialId::from_hex("0123456789abcdef");
        assert_eq!(id, "0123456789abcdef");
        assert_eq!(format!("{id}"), "0123456789abcdef");
        assert_eq!(&id[..4], "0123");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"0123456789abcdef\"");
        assert!(
            std::mem::size_of::<Trial>() <= 96,
            "{}",
            std::mem::size_of::<Trial>()
        );
    }
}

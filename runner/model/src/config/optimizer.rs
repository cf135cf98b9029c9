//! `training.optimizer` and its settings (mixlab §6): which update rule each parameter group gets.
//!
//! mixlab's default is Muon: `muon`, `muon_eq_r` and `normuon` orthogonalise the matrix group's
//! updates and train the embedding, head and scalar groups with AdamW; `adamw` and `lamb` train every
//! group with one rule.

use crate::error::ConfigError;
use crate::ir::{ParamGroup, WeightSpec};
use crate::json::Fields;

/// The update rule of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    AdamW,
    Muon(MuonVariant),
    Lamb,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::AdamW => "adamw",
            Rule::Muon(MuonVariant::Plain) => "muon",
            Rule::Muon(MuonVariant::EqR) => "muon_eq_r",
            Rule::Muon(MuonVariant::NorMuon) => "normuon",
            Rule::Lamb => "lamb",
        }
    }
}

/// What Muon does to the orthogonalised update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuonVariant {
    Plain,
    /// MuonEq-R: each row of the update normalised to unit L2 norm.
    EqR,
    /// NorMuon: per-row second-moment normalisation, Frobenius norm preserved.
    NorMuon,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonSettings {
    /// `muon_momentum` (default `beta1`, as mixlab).
    pub momentum: f64,
    /// `muon_backend_steps`: Newton-Schulz iterations (default 5).
    pub backend_steps: usize,
    /// `muon_nesterov` (default true).
    pub nesterov: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Upper bound of the trust ratio; 0 = uncapped.
    pub trust_ratio_cap: f64,
}

/// `training.optimizer` and the fields of its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// The name written in the config (or `muon`, the default).
    pub name: &'static str,
    /// Whether the config named it (the run header says "default" otherwise).
    pub explicit: bool,
    pub matrix: Rule,
    pub other: Rule,
    pub muon: MuonSettings,
    pub lamb: LambSettings,
}

impl OptimizerConfig {
    /// The rule that trains a weight of `group`.
    pub fn rule(&self, group: ParamGroup) -> Rule {
        match group {
            ParamGroup::Matrix => self.matrix,
            _ => self.other,
        }
    }

    /// The rule that trains this weight: its group's, except that Muon orthogonalises only
    /// rank-2 weights (a rank-1 weight of the matrix group gets the other groups' rule).
    pub fn rule_for(&self, w: &WeightSpec) -> Rule {
        match self.rule(w.group) {
            Rule::Muon(_) if w.shape.len() != 2 => self.other,
            r => r,
        }
    }

    /// `matrix: muon, embed/head/scalar: adamw`, or the single rule.
    pub fn describe(&self) -> String {
        if self.matrix == self.other {
            format!("{} (all groups)", self.matrix.name())
        } else {
            format!(
                "{} (matrix), {} (embed, head, scalar)",
                self.matrix.name(),
                self.other.name()
            )
        }
    }
}

pub const FIELDS: &[&str] = &[
    "optimizer",
    "muon_momentum",
    "muon_backend_steps",
    "muon_nesterov",
    "lamb_beta1",
    "lamb_beta2",
    "lamb_eps",
    "lamb_trust_ratio_cap",
];

const NAMES: &[&str] = &["muon", "muon_eq_r", "normuon", "adamw", "lamb"];

/// Reads the optimizer fields; `beta1` is the default Muon momentum (mixlab).
pub(crate) fn parse(f: &mut Fields<'_>, beta1: f64) -> Result<OptimizerConfig, ConfigError> {
    let explicit = f.has("optimizer");
    let name = f.choice("optimizer", NAMES, "muon")?;
    let (matrix, other) = match name {
        "muon" => (Rule::Muon(MuonVariant::Plain), Rule::AdamW),
        "muon_eq_r" => (Rule::Muon(MuonVariant::EqR), Rule::AdamW),
        "normuon" => (Rule::Muon(MuonVariant::NorMuon), Rule::AdamW),
        "lamb" => (Rule::Lamb, Rule::Lamb),
        _ => (Rule::AdamW, Rule::AdamW),
    };
    let momentum = match f.f64("muon_momentum")? {
        None => beta1,
        Some(m) if (0.0..1.0).contains(&m) => m,
        Some(m) => {
            return Err(f.error(
                "muon_momentum",
                format!("muon_momentum={m} must be in [0, 1)"),
            ));
        }
    };
    let backend_steps = match f.usize("muon_backend_steps")? {
        None => 5,
        Some(s) if (1..=20).contains(&s) => s,
        Some(s) => {
            return Err(f
                .error(
                    "muon_backend_steps",
                    format!("muon_backend_steps={s} must be in 1..=20"),
                )
                .with_hint("5 Newton-Schulz iterations is the usual choice"));
        }
    };
    let nesterov = f.bool("muon_nesterov")?.unwrap_or(true);
    let unit = |f: &mut Fields<'_>, key: &str, default: f64| -> Result<f64, ConfigError> {
        match f.f64(key)? {
            None => Ok(default),
            Some(v) if (0.0..1.0).contains(&v) => Ok(v),
            Some(v) => Err(f.error(key, format!("{key}={v} must be in [0, 1)"))),
        }
    };
    let lamb = LambSettings {
        beta1: unit(f, "lamb_beta1", 0.9)?,
        beta2: unit(f, "lamb_beta2", 0.999)?,
        eps: match f.f64("lamb_eps")? {
            None => 1e-6,
            Some(e) if e > 0.0 => e,
            Some(e) => return Err(f.error("lamb_eps", format!("lamb_eps={e} must be > 0"))),
        },
        trust_ratio_cap: match f.f64("lamb_trust_ratio_cap")? {
            None => 10.0,
            Some(c) if c >= 0.0 => c,
            Some(c) => {
                return Err(f.error(
                    "lamb_trust_ratio_cap",
                    format!("lamb_trust_ratio_cap={c} must be >= 0 (0 = uncapped)"),
                ));
            }
        },
    };
    Ok(OptimizerConfig {
        name,
        explicit,
        matrix,
        other,
        muon: MuonSettings {
            momentum,
            backend_steps,
            nesterov,
        },
        lamb,
    })
}

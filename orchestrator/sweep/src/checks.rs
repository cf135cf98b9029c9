//! Sweep-level checks made before any point is built: names, the metric, and the settings that only
//! matter when the sweep runs (so that `plan` reports them).

use crate::spec::SweepSpec;

/// `budget:` and `cost:`: positive, finite numbers; a budget replaces `steps`.
fn check_budget(spec: &SweepSpec) -> Result<(), (&'static str, String)> {
    if let Some(b) = &spec.budget {
        if b.flops.is_empty() {
            return Err((
                "budget",
                "budget.flops needs at least one budget (e.g. flops: [1e15, 3e15])".into(),
            ));
        }
        if let Some(bad) = b.flops.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err((
                "budget",
                format!("budget.flops: {bad} is not a positive number of FLOPs"),
            ));
        }
        if spec.steps.is_some() {
            return Err((
                "budget",
                "budget and steps are both set: a compute budget decides each trial's steps; remove `steps:`".into(),
            ));
        }
    }
    if let Some(c) = &spec.cost {
        let price = |p: f64| p.is_finite() && p >= 0.0;
        if !price(c.gpu_hour_usd) || c.cpu_hour_usd.is_some_and(|p| !price(p)) {
            return Err((
                "cost",
                "cost.gpu_hour_usd (and cpu_hour_usd) must be prices >= 0 (e.g. 2.5)".into(),
            ));
        }
    }
    Ok(())
}

/// Names and metric: things that would silently misfile or misrank results.
pub(crate) fn check_names(spec: &SweepSpec) -> Result<(), (String, String)> {
    let n = &spec.name;
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !n.starts_with('.');
    if !ok {
        return Err((
            "name".into(),
            format!(
                "sweep name {n:?} must be letters, digits, '-', '_' and '.' and not start with '.' \
                 (it names a folder in storage)"
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for v in &spec.variants {
        if !seen.insert(v.name.as_str()) {
            return Err((
                v.name.clone(),
                format!(
                    "two variants are named {:?}: give each a distinct name (results are grouped by it)",
                    v.name
                ),
            ));
        }
    }
    let (metric, _) = spec.metric();
    if !crate::spec::METRICS.contains(&metric.as_str()) {
        let hint = mixsweep_model::error::suggest(&metric, crate::spec::METRICS)
            .map(|m| format!("did you mean {m:?}? "))
            .unwrap_or_default();
        return Err((
            "metric".into(),
            format!(
                "no trial reports the metric {metric:?}; {hint}known metrics: {}",
                crate::spec::METRICS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Settings that only matter when the sweep runs, checked when it is loaded so that `plan` reports them.
pub(crate) fn check_run_settings(spec: &SweepSpec) -> Result<(), (&'static str, String)> {
    use crate::spec::{parse_duration, parse_memory};
    if let Some(t) = &spec.timeout {
        parse_duration(t).map_err(|e| ("timeout", e))?;
    }
    check_budget(spec)?;
    if let Some(m) = &spec.memory {
        parse_memory(m).map_err(|e| ("memory", e))?;
    }
    if spec.cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        return Err(("cpus", "cpus must be > 0 (cores, e.g. 4 or 0.5)".into()));
    }
    if spec.trials_per_gpu.and_then(|t| t.fixed()) == Some(0) {
        return Err((
            "trials_per_gpu",
            "trials_per_gpu must be >= 1 (or `auto`)".into(),
        ));
    }
    if spec.max_parallel == Some(0) {
        return Err(("max_parallel", "max_parallel must be >= 1".into()));
    }
    if let Some(g) = &spec.gpus
        && g.ids().is_some_and(|ids| ids.is_empty())
    {
        return Err((
            "gpus",
            "gpus must name at least one GPU (or be `all`)".into(),
        ));
    }
    if let Some(t) = &spec.kubernetes.schedule_timeout {
        parse_duration(t).map_err(|e| ("schedule_timeout", e))?;
    }
    if spec.backend == crate::spec::Backend::Kubernetes
        && matches!(
            spec.gpus,
            Some(crate::spec::GpuSpec::All(_)) | Some(crate::spec::GpuSpec::Ids(_))
        )
    {
        return Err(("gpus", "with backend: kubernetes, `gpus` is the number of GPUs per trial (e.g. gpus: 1); the scheduler picks the devices".into()));
    }
    if spec.kubernetes.priority_class.is_some() && spec.kubernetes.queue.is_none() {
        return Err((
            "kubernetes.priority_class",
            "kubernetes.priority_class is Kueue's WorkloadPriorityClass and needs kubernetes.queue (for the pods' PriorityClass use priority_class_name)".into(),
        ));
    }
    let slurm = &spec.slurm;
    for (field, value) in [
        ("slurm.time", &slurm.time),
        ("slurm.signal_before", &slurm.signal_before),
    ] {
        if let Some(v) = value {
            parse_duration(v).map_err(|e| (field, e))?;
        }
    }
    if let Some(m) = &slurm.memory {
        crate::spec::parse_memory(m).map_err(|e| ("slurm.memory", e))?;
    }
    if slurm.gpus == Some(0) || slurm.cpus == Some(0) {
        return Err((
            "slurm",
            "slurm.gpus and slurm.cpus must be >= 1 when set".into(),
        ));
    }
    for name in &spec.env {
        if name.is_empty() || name.contains('=') {
            return Err((
                "env",
                format!(
                    "env lists variable names only, not {name:?} (the value is read from the orchestrator's environment)"
                ),
            ));
        }
    }
    Ok(())
}

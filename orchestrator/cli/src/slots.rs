//! Where a run's trials go: GPU slots (the sweep's `gpus`, else every local GPU; each
//! `trials_per_gpu` times, or as many as `trials_per_gpu: auto` decides) and how many trials run at
//! once (`max_parallel`, capped at the slots; a Kueue queue admits everything).

use crate::backend::Backend;
use crate::packing::Shapes;
use crate::storage::Storage;
use anyhow::Result;
use mixsweep_sweep::Sweep;
use mixsweep_sweep::spec::TrialsPerGpu;
use std::path::Path;

/// The run's slots and parallelism.
pub struct Placement {
    /// One entry per place a trial can run; `None`: no GPU of its own (CPU).
    pub slots: Vec<Option<usize>>,
    pub max_parallel: usize,
    /// What `trials_per_gpu: auto` measured per model shape (orders trials longest first).
    pub shapes: Option<Shapes>,
}

pub async fn place(
    backend: &Backend,
    sweep: &Sweep,
    storage: &Storage,
    runner: &Path,
    max_parallel: Option<usize>,
    quiet: bool,
) -> Result<Placement> {
    // GPU slots: the sweep's `gpus` ids (each `trials_per_gpu` times), else for local runs every GPU
    // nvidia-smi lists; `None` is a slot without a GPU of its own (CPU).
    let gpu_ids: Vec<usize> = match &sweep.spec.gpus {
        // On Kubernetes `gpus: N` is each pod's GPU count; the cluster places the pods.
        _ if backend.cluster_places_gpus() => vec![],
        Some(g) => g.ids().unwrap_or_default(),
        None if matches!(backend, Backend::Local { .. }) => {
            (0..crate::backend::gpu_count()).collect()
        }
        None => vec![],
    };
    let (per_gpu, shapes) = match sweep.spec.trials_per_gpu {
        None => (1, None),
        Some(TrialsPerGpu::Fixed(n)) => (n, None),
        Some(TrialsPerGpu::Auto(_)) => {
            crate::packing::for_run(backend, &gpu_ids, sweep, runner, storage, quiet).await?
        }
    };
    let slots: Vec<Option<usize>> = if gpu_ids.is_empty() {
        vec![None]
    } else {
        gpu_ids
            .iter()
            .flat_map(|&g| std::iter::repeat_n(Some(g), per_gpu))
            .collect()
    };
    let gpu_slots = if gpu_ids.is_empty() { 0 } else { slots.len() };
    let requested = max_parallel;
    let mut max_parallel = requested
        .or(sweep.spec.max_parallel)
        .unwrap_or(backend.default_parallel(gpu_slots))
        .max(1);
    if let Some(q) = backend.admission_queue() {
        if let Some(n) = requested.or(sweep.spec.max_parallel) {
            eprintln!(
                "note: max_parallel {n} is ignored: Kueue queue {q} admits the Jobs within its quota"
            );
        }
        max_parallel = sweep.trials.len().max(1);
    }
    if gpu_slots > 0 && max_parallel > gpu_slots {
        eprintln!(
            "note: max_parallel {max_parallel} > {gpu_slots} GPU slots ({} GPUs x trials_per_gpu {per_gpu}); running {gpu_slots} at a time",
            gpu_ids.len()
        );
        max_parallel = gpu_slots;
    }
    Ok(Placement {
        slots,
        max_parallel,
        shapes,
    })
}

//! Which fused CUDA kernels run instead of their chunked forms.
//!
//! Every recurrence with a fused kernel, and the causal convolution, runs it (forward and backward,
//! training only) on MLX's CUDA backend. `MIXSWEEP_SCAN` turns kernels off, for benchmarks and comparisons: `chunked` turns them
//! all off, `chunked:linear,gla` the named ones ([`Fused::name`]). A name that is not a kernel is
//! reported once on stderr and ignored.

/// The fused kernels, by their `MIXSWEEP_SCAN` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    /// Mamba's selective scan (`selective_scan.cpp`).
    Selective,
    /// The diagonal linear recurrence of every decay scan (`linear_scan.cpp`).
    Linear,
    /// Gated linear attention's matrix state (`gla_scan`, `matrix_scans.cpp`).
    Gla,
    /// The gated delta rule (`delta_scan`, `matrix_scans.cpp`).
    Delta,
    /// Mamba-3's trapezoidal rotating scan (`mamba3_scan.cpp`).
    Mamba3,
    /// The causal depthwise convolution of Mamba-style blocks (`causal_conv.cpp`).
    Conv,
}

impl Fused {
    pub const ALL: [Fused; 6] = [
        Fused::Selective,
        Fused::Linear,
        Fused::Gla,
        Fused::Delta,
        Fused::Mamba3,
        Fused::Conv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fused::Selective => "selective",
            Fused::Linear => "linear",
            Fused::Gla => "gla",
            Fused::Delta => "delta",
            Fused::Mamba3 => "mamba3",
            Fused::Conv => "conv",
        }
    }
}

/// The kernels a `MIXSWEEP_SCAN` value turns off, and the names in it that are not kernels.
fn turned_off(value: Option<&str>) -> (Vec<Fused>, Vec<String>) {
    match value.map(str::trim) {
        None | Some("") => (vec![], vec![]),
        Some("chunked") => (Fused::ALL.to_vec(), vec![]),
        Some(v) => {
            let Some(list) = v.strip_prefix("chunked:") else {
                return (vec![], vec![v.to_string()]);
            };
            let (mut off, mut unknown) = (vec![], vec![]);
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match Fused::ALL.iter().find(|k| k.name() == name) {
                    Some(k) => off.push(*k),
                    None => unknown.push(name.to_string()),
                }
            }
            (off, unknown)
        }
    }
}

/// Whether `kernel` runs instead of its chunked form: on the CUDA backend, unless `MIXSWEEP_SCAN`
/// turns it off.
pub fn enabled(kernel: Fused) -> bool {
    static OFF: std::sync::OnceLock<Vec<Fused>> = std::sync::OnceLock::new();
    let off = OFF.get_or_init(|| {
        let (off, unknown) = turned_off(std::env::var("MIXSWEEP_SCAN").ok().as_deref());
        if !unknown.is_empty() {
            let names: Vec<&str> = Fused::ALL.iter().map(|k| k.name()).collect();
            eprintln!(
                "warning: MIXSWEEP_SCAN: {} ignored (use `chunked`, or `chunked:` and some of {})",
                unknown.join(", "),
                names.join(",")
            );
        }
        off
    });
    !off.contains(&kernel) && mixsweep_mlx::kernels::fused_scan_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixsweep_scan_values() {
        assert_eq!(turned_off(None), (vec![], vec![]));
        assert_eq!(turned_off(Some("chunked")).0, Fused::ALL.to_vec());
        assert_eq!(
            turned_off(Some("chunked:linear, gla")),
            (vec![Fused::Linear, Fused::Gla], vec![])
        );
        assert_eq!(
            turned_off(Some("chunked:linear,lineer")),
            (vec![Fused::Linear], vec!["lineer".to_string()])
        );
        assert_eq!(
            turned_off(Some("fused")),
            (vec![], vec!["fused".to_string()])
        );
    }
}

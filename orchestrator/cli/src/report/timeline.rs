//! The report's timeline: each trial's last attempt as a bar from when it was handed to its backend
//! to when it ended (from `attempt.json`), one row per device slot. Trials the orchestrator placed on
//! a GPU keep that GPU's row; the others (CPU runs, cluster backends) are packed into as few rows as
//! ran at once, which is how many ran in parallel.

use super::plot::Timeline;
use crate::storage::{Storage, TrialStates};
use anyhow::Result;

/// The timeline of the trials `ids`, or `None` when no attempt recorded its times (older runs).
pub async fn timeline(storage: &Storage, ids: &[String]) -> Result<Option<Timeline>> {
    let mut spans = vec![];
    for id in ids {
        let Some(a) = storage.attempt(id).await? else {
            continue;
        };
        if let (Some(s), Some(e)) = (a.started_at, a.ended_at) {
            spans.push((a.slot.clone(), s, e.max(s), a.status.to_string()));
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    Ok(Some(layout(spans)))
}

/// Places `(slot, start, end, ending)` spans into rows.
fn layout(mut spans: Vec<(Option<String>, f64, f64, String)>) -> Timeline {
    spans.sort_by(|a, b| a.1.total_cmp(&b.1));
    let t0 = spans[0].1;
    let mut lanes: Vec<String> = spans.iter().filter_map(|s| s.0.clone()).collect();
    lanes.sort();
    lanes.dedup();
    // rows for unplaced trials: the first row free at the span's start
    let mut free_at: Vec<f64> = vec![];
    let mut bars = vec![];
    for (slot, s, e, ending) in spans {
        let lane = match slot {
            Some(name) => lanes.iter().position(|l| *l == name).unwrap_or(0),
            None => {
                let row = match free_at.iter().position(|f| *f <= s) {
                    Some(r) => r,
                    None => {
                        free_at.push(0.0);
                        lanes.push(format!("slot {}", free_at.len()));
                        free_at.len() - 1
                    }
                };
                free_at[row] = e;
                lanes
                    .iter()
                    .position(|l| *l == format!("slot {}", row + 1))
                    .unwrap_or(0)
            }
        };
        bars.push((lane, s - t0, e - t0, ending));
    }
    Timeline {
        title: "Trials over time".into(),
        lanes,
        bars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_trials_get_their_own_rows() {
        let span = |slot: Option<&str>, s: f64, e: f64| {
            (slot.map(String::from), s, e, "completed".to_string())
        };
        // two at once, then a third after the first ended: two rows
        let t = layout(vec![
            span(None, 10.0, 20.0),
            span(None, 12.0, 30.0),
            span(None, 21.0, 25.0),
        ]);
        assert_eq!(t.lanes, ["slot 1", "slot 2"]);
        let rows: Vec<usize> = t.bars.iter().map(|b| b.0).collect();
        assert_eq!(rows, [0, 1, 0]);
        assert_eq!((t.bars[0].1, t.bars[1].2), (0.0, 20.0));
        // placed trials keep their GPU's row
        let t = layout(vec![
            span(Some("gpu 1"), 0.0, 5.0),
            span(Some("gpu 0"), 1.0, 4.0),
        ]);
        assert_eq!(t.lanes, ["gpu 0", "gpu 1"]);
        assert_eq!(t.bars[0].0, 1);
    }
}

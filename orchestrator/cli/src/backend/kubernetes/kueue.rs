//! Kueue's view of a trial's Job: queued (suspended, not yet admitted, with its position from
//! Kueue's visibility API where the cluster serves it), admitted, or evicted (suspended again after
//! admission). See docs/sweeps.md, "Kueue".

use k8s_openapi::api::batch::v1::Job;
use std::time::{Duration, Instant};

/// How often a queued trial asks the visibility API for its position.
const POSITION_EVERY: Duration = Duration::from_secs(10);

/// What the backend does next with a Job under Kueue.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Waiting for admission: no pods, no `schedule_timeout`.
    Queued,
    Admitted,
    /// Suspended again after admission: why.
    Evicted(String),
}

/// One trial's Job as Kueue has it, across polls.
#[derive(Debug, Default)]
pub struct QueueWatch {
    admitted: bool,
    /// The position last reported (`Some(None)`: reported queued without a position).
    reported: Option<Option<u64>>,
    asked: Option<Instant>,
}

impl QueueWatch {
    /// Classifies the Job's current state and logs the changes a person wants to see.
    pub async fn observe(
        &mut self,
        client: &kube::Client,
        namespace: &str,
        queue: &str,
        job: &Job,
        trial: &str,
        log: &(dyn Fn(String) + Sync),
    ) -> Seen {
        let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
        if suspended && self.admitted {
            return Seen::Evicted(suspension(job));
        }
        if !suspended {
            if !self.admitted && self.reported.is_some() {
                log(format!("{trial}: admitted by Kueue"));
            }
            self.admitted = true;
            return Seen::Admitted;
        }
        if self.asked.is_none_or(|t| t.elapsed() >= POSITION_EVERY) {
            self.asked = Some(Instant::now());
            let name = job.metadata.name.as_deref().unwrap_or_default();
            let position = position(client, namespace, queue, name).await;
            if self.reported != Some(position) {
                let at = position
                    .map(|p| format!(" (position {} in the queue)", p + 1))
                    .unwrap_or_default();
                log(format!(
                    "{trial}: queued in Kueue queue {queue}{at}, waiting for admission"
                ));
                self.reported = Some(position);
            }
        }
        Seen::Queued
    }
}

/// Why a Job is suspended, from its `Suspended` condition.
pub fn suspension(job: &Job) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().rev().find(|c| c.type_ == "Suspended"))
        .map(|c| {
            let reason = c.reason.clone().unwrap_or_default();
            match &c.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            }
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "suspended again after admission".into())
}

/// The Job's 0-based position in its LocalQueue from Kueue's visibility API
/// (`pendingworkloads`); `None` where the API is not served or the Job is not listed.
async fn position(client: &kube::Client, namespace: &str, queue: &str, job: &str) -> Option<u64> {
    let url = format!(
        "/apis/visibility.kueue.x-k8s.io/v1beta1/namespaces/{namespace}/localqueues/{queue}/pendingworkloads"
    );
    let request = http::Request::get(url).body(Vec::new()).ok()?;
    let summary: serde_json::Value = client.request(request).await.ok()?;
    summary["items"].as_array()?.iter().find_map(|w| {
        let owned = w["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .any(|o| o["kind"] == "Job" && o["name"] == job);
        owned.then(|| w["positionInLocalQueue"].as_u64()).flatten()
    })
}

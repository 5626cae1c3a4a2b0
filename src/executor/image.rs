//! Making sure the sandbox image is present: inspect it, or pull it with per-layer progress, and
//! say how to build a local one when no registry is reachable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use super::{ExecError, PullProgress};

/// Longest silence from the daemon during a pull before it is abandoned.
const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of an image inspect.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What to tell the user when the image is missing and cannot be pulled: the fix first (a
/// one-line summary on stderr may cut the end), then what Docker said, if anything.
pub fn missing_image_fix(image: &str, docker_said: Option<&str>) -> String {
    let mut s = format!(
        "the sandbox image {image} is not here and could not be pulled. Build a local one without \
         any registry: `scripts/build-sandbox-image.sh`, then run with `--image \
         proctor-sandbox:bookworm` (or PROCTOR_SANDBOX_IMAGE=proctor-sandbox:bookworm); or \
         `docker pull {image}` where a registry is reachable"
    );
    if let Some(said) = docker_said {
        s.push_str(&format!(" (Docker said: {said})"));
    }
    s
}

/// What `proctor doctor` says when the image is not present (nothing was pulled yet).
pub fn absent_image_fix(image: &str) -> String {
    format!(
        "the sandbox image {image} is not here. Build a local one without any registry: \
         `scripts/build-sandbox-image.sh`, then run with `--image proctor-sandbox:bookworm` (or \
         PROCTOR_SANDBOX_IMAGE=proctor-sandbox:bookworm); or pull it now with `docker pull {image}` \
         (proctor also pulls it before the first block when a registry is reachable)"
    )
}

/// Whether `image` is present locally.
pub async fn image_present(docker: &Docker, image: &str) -> Result<bool, ExecError> {
    match tokio::time::timeout(INSPECT_TIMEOUT, docker.inspect_image(image)).await {
        Err(_) => Err(ExecError::Docker(format!(
            "the Docker daemon did not answer an image inspect of {image} within {} s",
            INSPECT_TIMEOUT.as_secs()
        ))),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(false),
        Ok(Err(e)) => Err(ExecError::Docker(format!(
            "cannot inspect image {image}: {e}"
        ))),
    }
}

/// Per-layer pull bookkeeping turned into `PullProgress` events.
#[derive(Debug, Default)]
pub struct PullTracker {
    layers: HashMap<String, (u64, u64, bool)>,
}

impl PullTracker {
    /// Folds one daemon progress message in; returns the progress so far.
    pub fn update(&mut self, image: &str, info: &bollard::models::CreateImageInfo) -> PullProgress {
        let status = info.status.clone().unwrap_or_default();
        if let Some(id) = info
            .id
            .as_deref()
            .filter(|id| !id.is_empty() && *id != image)
        {
            let is_layer = status != "Pulling from"
                && !status.starts_with("Pulling from")
                && !status.starts_with("Digest")
                && !status.starts_with("Status");
            if is_layer {
                let entry = self.layers.entry(id.to_owned()).or_default();
                if let Some(d) = &info.progress_detail
                    && let (Some(cur), Some(total)) = (d.current, d.total)
                    && status.starts_with("Downloading")
                {
                    entry.0 = cur.max(0) as u64;
                    entry.1 = total.max(0) as u64;
                }
                if matches!(
                    status.as_str(),
                    "Download complete" | "Pull complete" | "Already exists"
                ) {
                    entry.2 = true;
                    entry.0 = entry.0.max(entry.1);
                }
            }
        }
        PullProgress {
            image: image.to_owned(),
            status,
            current: self.layers.values().map(|l| l.0).sum(),
            total: self.layers.values().map(|l| l.1).sum(),
            layers: self.layers.len() as u32,
            layers_done: self.layers.values().filter(|l| l.2).count() as u32,
        }
    }
}

/// Makes sure `image` is present, pulling it if needed; `progress` sees each pull update.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    mut progress: impl FnMut(PullProgress),
) -> Result<(), ExecError> {
    if image_present(docker, image).await? {
        return Ok(());
    }
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    let mut tracker = PullTracker::default();
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    loop {
        let item = match tokio::time::timeout(PULL_IDLE_TIMEOUT, stream.next()).await {
            Err(_) => {
                let stalled = format!("the pull stalled for {} s", PULL_IDLE_TIMEOUT.as_secs());
                return Err(ExecError::Image(missing_image_fix(image, Some(&stalled))));
            }
            Ok(None) => break,
            Ok(Some(item)) => item,
        };
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                    return Err(ExecError::Image(missing_image_fix(image, Some(&err))));
                }
                let p = tracker.update(image, &info);
                let layer_event = matches!(
                    p.status.as_str(),
                    "Download complete" | "Pull complete" | "Already exists"
                );
                if layer_event || last_sent.elapsed() >= Duration::from_millis(100) {
                    last_sent = Instant::now();
                    progress(p);
                }
            }
            Err(e) => {
                return Err(ExecError::Image(missing_image_fix(
                    image,
                    Some(&e.to_string()),
                )));
            }
        }
    }
    if image_present(docker, image).await? {
        Ok(())
    } else {
        Err(ExecError::Image(missing_image_fix(image, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{CreateImageInfo, ProgressDetail};

    fn info(id: &str, status: &str, cur: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail {
                current: cur,
                total,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_fix_for_a_missing_image_comes_before_what_docker_said() {
        let docker = "Docker responded with status code 500: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host";
        let msg = missing_image_fix("python:3.12-slim", Some(docker));
        // The console's one-line pause summary keeps 400 characters: the fix must be in them.
        let head: String = msg.chars().take(330).collect();
        for fix in [
            "scripts/build-sandbox-image.sh",
            "--image proctor-sandbox:bookworm",
            "docker pull python:3.12-slim",
        ] {
            assert!(head.contains(fix), "{fix} not in {head}");
        }
        assert!(msg.ends_with(&format!("(Docker said: {docker})")));
    }

    #[test]
    fn progress_sums_layers_and_counts_completed_ones() {
        let mut t = PullTracker::default();
        t.update("py", &info("py", "Pulling from library/python", None, None));
        t.update("py", &info("a", "Downloading", Some(10), Some(100)));
        let p = t.update("py", &info("b", "Downloading", Some(5), Some(50)));
        assert_eq!(
            (p.current, p.total, p.layers, p.layers_done),
            (15, 150, 2, 0)
        );
        t.update("py", &info("a", "Download complete", None, None));
        let p = t.update("py", &info("a", "Pull complete", None, None));
        assert_eq!(
            (p.current, p.total, p.layers, p.layers_done),
            (105, 150, 2, 1)
        );
    }
}

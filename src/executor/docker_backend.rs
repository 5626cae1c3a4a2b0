//! The Docker [`SandboxBackend`]: a sandbox is a container (bollard), a stream is a `docker exec`
//! with stdin attached, the network switch is `network connect`/`disconnect`. Every call has a
//! timeout; every failure says what was attempted.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use futures::future::BoxFuture;

use super::backend::{Chunk, ProcessSpec, SandboxBackend, SandboxStream, StreamError};
use super::engine_host::{self, EngineHost};
use super::image::ensure_image;
use super::sandbox::SandboxSpec;
use super::{ExecError, PullProgress};

/// Timeout of every single Docker API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The network a sandbox joins when it is allowed one.
const NETWORK: &str = "bridge";

/// Sandboxes as containers on one Docker engine. Connects lazily.
pub struct DockerBackend {
    engine: EngineHost,
    docker: tokio::sync::Mutex<Option<Docker>>,
}

impl DockerBackend {
    /// A backend on `engine`; connects on first use.
    pub fn new(engine: EngineHost) -> Self {
        Self {
            engine,
            docker: tokio::sync::Mutex::new(None),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &EngineHost {
        &self.engine
    }

    /// The client, connecting on first use.
    pub async fn connect(&self) -> Result<Docker, ExecError> {
        let mut guard = self.docker.lock().await;
        if let Some(d) = guard.as_ref() {
            return Ok(d.clone());
        }
        let d = engine_host::connect(&self.engine).await?;
        *guard = Some(d.clone());
        Ok(d)
    }

    async fn create_container(
        &self,
        name: &str,
        spec: &SandboxSpec,
        key: &str,
        owner: &str,
        progress: Box<dyn Fn(PullProgress) + Send + Sync>,
    ) -> Result<String, ExecError> {
        let docker = self.connect().await?;
        let body = spec.container_body(key, owner);
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let mut pulled = false;
        let created = loop {
            let create = docker.create_container(Some(options.clone()), body.clone());
            match tokio::time::timeout(CALL_TIMEOUT, create).await {
                Ok(Ok(c)) => break c,
                // No such image: pull it (with progress) and try once more. Checking only on
                // this path keeps an image inspect off the cold start.
                Ok(Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })) if !pulled => {
                    pulled = true;
                    ensure_image(&docker, &spec.image, &progress).await?;
                }
                Ok(Err(e)) => {
                    return Err(ExecError::Docker(format!(
                        "could not create the sandbox container from {}: {e}",
                        spec.image
                    )));
                }
                Err(_) => {
                    return Err(ExecError::Docker(format!(
                        "could not create the sandbox container: the Docker daemon did not \
                         answer within {} s",
                        CALL_TIMEOUT.as_secs()
                    )));
                }
            }
        };
        let id = created.id;
        // A sandbox whose network is switched per block is created on the network and taken off
        // it before it starts: it never runs a moment online unless a block is allowed to.
        if spec.switchable_network() && !spec.network {
            let off = docker.disconnect_network(
                NETWORK,
                NetworkDisconnectRequest {
                    container: id.clone(),
                    force: Some(true),
                },
            );
            if let Err(e) = call("take the new sandbox off the network", off).await {
                remove_container(&docker, &id).await;
                return Err(e);
            }
        }
        if let Err(e) = call(
            "start the sandbox container",
            docker.start_container(&id, None),
        )
        .await
        {
            remove_container(&docker, &id).await;
            return Err(e);
        }
        Ok(id)
    }

    async fn exec(&self, id: &str, process: ProcessSpec) -> Result<SandboxStream, StreamError> {
        let docker = self
            .connect()
            .await
            .map_err(|e| StreamError::Unreachable(e.to_string()))?;
        let create = CreateExecOptions {
            attach_stdin: Some(process.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(process.env.clone()),
            cmd: Some(process.argv.clone()),
            user: Some(process.user.clone()),
            working_dir: process.cwd.clone(),
            ..Default::default()
        };
        // The engine answered no (the container is gone or stopped, a bad request): Refused.
        // A transport failure (a cut link, a relay that is down) may heal: Unreachable.
        let refused = |e: bollard::errors::Error| match e {
            bollard::errors::Error::DockerResponseServerError { .. } => {
                StreamError::Refused(e.to_string())
            }
            e => StreamError::Unreachable(e.to_string()),
        };
        let late = || {
            StreamError::Unreachable(format!(
                "the Docker daemon did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))
        };
        let exec = tokio::time::timeout(CALL_TIMEOUT, docker.create_exec(id, create))
            .await
            .map_err(|_| late())?
            .map_err(refused)?;
        let started = tokio::time::timeout(
            CALL_TIMEOUT,
            docker.start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(128 * 1024),
                }),
            ),
        )
        .await
        .map_err(|_| late())?
        .map_err(refused)?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(StreamError::Refused("exec started detached".into()));
        };
        let output = output
            .filter_map(|item| async move {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message })
                    | Ok(bollard::container::LogOutput::Console { message }) => {
                        Some(Ok(Chunk::Stdout(message)))
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok(Chunk::Stderr(message)))
                    }
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(e.to_string())),
                }
            })
            .boxed();
        let exec_id = exec.id;
        let exit_code = Box::new(move || -> BoxFuture<'static, Option<i64>> {
            Box::pin(async move {
                call("inspect an exec", docker.inspect_exec(&exec_id))
                    .await
                    .ok()
                    .and_then(|info| info.exit_code)
            })
        });
        Ok(SandboxStream {
            input,
            output,
            exit_code,
        })
    }

    async fn switch_network(&self, id: &str, on: bool) -> Result<(), ExecError> {
        let docker = self.connect().await?;
        if on {
            let connect = docker.connect_network(
                NETWORK,
                NetworkConnectRequest {
                    container: id.to_owned(),
                    ..Default::default()
                },
            );
            call("connect the sandbox to the network", connect).await
        } else {
            let disconnect = docker.disconnect_network(
                NETWORK,
                NetworkDisconnectRequest {
                    container: id.to_owned(),
                    force: Some(true),
                },
            );
            call("disconnect the sandbox from the network", disconnect).await
        }
    }
}

impl SandboxBackend for DockerBackend {
    fn is_remote(&self) -> bool {
        self.engine.is_remote()
    }

    fn describe(&self) -> String {
        format!("the Docker engine at {}", self.engine.host())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.connect().await.map(|_| ()) })
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        spec: &'a SandboxSpec,
        key: &'a str,
        owner: &'a str,
        progress: Box<dyn Fn(PullProgress) + Send + Sync>,
    ) -> BoxFuture<'a, Result<String, ExecError>> {
        Box::pin(self.create_container(name, spec, key, owner, progress))
    }

    fn destroy<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(docker) = self.connect().await {
                remove_container(&docker, id).await;
            }
        })
    }

    fn is_running<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Ok(docker) = self.connect().await else {
                return false;
            };
            matches!(
                call("inspect the sandbox", docker.inspect_container(id, None)).await,
                Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true)
            )
        })
    }

    fn open_stream<'a>(
        &'a self,
        id: &'a str,
        process: ProcessSpec,
    ) -> BoxFuture<'a, Result<SandboxStream, StreamError>> {
        Box::pin(self.exec(id, process))
    }

    fn set_network<'a>(&'a self, id: &'a str, on: bool) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(self.switch_network(id, on))
    }

    fn reset(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.docker.lock().await = None;
        })
    }

    fn detached(&self) -> Arc<dyn SandboxBackend> {
        Arc::new(DockerBackend::new(self.engine.clone()))
    }
}

/// Force-removes a container (kills it first) with its anonymous volumes; errors are logged,
/// never raised.
pub async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match call(
        "remove a sandbox",
        docker.remove_container(id, Some(options)),
    )
    .await
    {
        Ok(()) => {}
        Err(e) => tracing::debug!(%id, %e, "remove container"),
    }
}

/// Runs one Docker call under [`CALL_TIMEOUT`], naming what was attempted on failure.
pub async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, ExecError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ExecError::Docker(format!("could not {what}: {e}"))),
        Err(_) => Err(ExecError::Docker(format!(
            "could not {what}: the Docker daemon did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

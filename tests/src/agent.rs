//! A running eipgwd, stopped on drop, and eipctl calls against it.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bin_path,
    topology::{LAN_IF, Topology, WAN_IF},
};

pub struct AgentProcess {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    command: Vec<String>,
}

impl AgentProcess {
    pub fn start(topology: &Topology) -> anyhow::Result<Self> {
        Self::start_with(topology, &[])
    }

    /// Starts eipgwd with extra options (e.g. `--max-mappings`).
    pub fn start_with(topology: &Topology, extra: &[&str]) -> anyhow::Result<Self> {
        let socket = topology.socket_path();
        let log = topology.dir().join("eipgwd.log");
        let command = vec![
            "ip".to_owned(),
            "netns".into(),
            "exec".into(),
            topology.gw.name().into(),
            bin_path("eipgwd").to_string_lossy().into_owned(),
            "--wan".into(),
            WAN_IF.into(),
            "--lan".into(),
            LAN_IF.into(),
            "--state-dir".into(),
            topology.state_dir().to_string_lossy().into_owned(),
            "--bpffs".into(),
            topology.bpffs().to_string_lossy().into_owned(),
            "--api-socket".into(),
            socket.to_string_lossy().into_owned(),
        ];
        let mut command = command;
        command.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = Self { child: None, socket, log, command };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting eipgwd")?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls until the API answers, the process dies, or 20 s pass.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("eipgwd exited with {status} before serving; log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("eipgwd did not serve its API within 20 s; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the agent again after it stopped or died (a no-op while it runs).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait()? {
                None => return Ok(()),
                Some(_) => self.child = None,
            }
        }
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Stops the agent: SIGTERM (a clean stop) or SIGKILL (a crash). XDP stays attached.
    pub fn stop(&mut self, signal: i32) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
            child.wait()?;
        }
        Ok(())
    }

    pub fn restart(&mut self, signal: i32) -> anyhow::Result<()> {
        self.stop(signal)?;
        self.spawn()
    }

    /// Runs `eipctl --api-socket SOCKET ARGS...`.
    pub fn eipctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(bin_path("eipctl"))
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running eipctl")
    }

    /// Applies an `eipctl apply` document (YAML or JSON) and fails unless it is applied.
    pub fn apply_document(&self, document: &str) -> anyhow::Result<String> {
        let path = self.log.with_file_name(format!("document-{}.yaml", crate::unique_suffix()));
        std::fs::write(&path, document)?;
        let result = self.eipctl_ok(&["apply", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Runs eipctl and fails unless it exits 0.
    pub fn eipctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.eipctl(args)?;
        if !out.status.success() {
            return Err(crate::netns::failed(&format!("eipctl {}", args.join(" ")), &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.stop(libc::SIGTERM);
    }
}

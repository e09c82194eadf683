//! Network namespaces and bpffs mounts that clean up after themselves.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::Context as _;

/// Runs a command and fails with its output if it does not succeed.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup`)"))?;
    if !output.status.success() {
        return Err(failed(&format!("{program} {}", args.join(" ")), &output));
    }
    Ok(output)
}

/// The error for a command that did not succeed: what it was, its status and its output.
pub fn failed(command: &str, output: &Output) -> anyhow::Error {
    anyhow::anyhow!(
        "`{command}` failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command with `input` on its standard input (e.g. `ip -batch -`) and fails with
/// its output if it does not succeed.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup`)"))?;
    // Written from here, then closed: `ip -batch` reads to the end before it answers.
    let written = child.stdin.take().context("stdin")?.write_all(input.as_bytes());
    let output = child.wait_with_output()?;
    if !output.status.success() || written.is_err() {
        let command = format!("{program} {}", args.join(" "));
        return Err(failed(&command, &output).context(format!("input:\n{input}")));
    }
    Ok(output)
}

/// A named network namespace, deleted (with every interface in it) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.to_owned() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates many namespaces with one `ip -batch` process (instead of one `ip` each) and
    /// brings their loopbacks up. Whatever was made is guarded, so a failure part way
    /// leaves nothing behind.
    pub fn create_many(names: &[String]) -> anyhow::Result<Vec<Self>> {
        let batch: String = names.iter().map(|name| format!("netns add {name}\n")).collect();
        let created = run_with_input("ip", &["-batch", "-"], &batch);
        let made: Vec<Self> = names
            .iter()
            .filter(|name| Path::new("/run/netns").join(name).exists())
            .map(|name| Self { name: name.clone() })
            .collect();
        created?;
        for ns in &made {
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        Ok(made)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Several `ip` commands, one a line, run in the namespace by one process
    /// (`ip -n NAME -batch -`); it stops at the first that fails.
    pub fn ip_batch(&self, commands: &str) -> anyhow::Result<Output> {
        run_with_input("ip", &["-n", &self.name, "-batch", "-"], commands)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]).map(|_| ())
    }

    /// A command that runs inside the namespace (`ip netns exec NAME ...`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs a command inside the namespace and fails with its output unless it succeeds.
    pub fn exec_ok(&self, argv: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(argv);
        run("ip", &all)
    }

    /// Runs `f` on a thread that has entered this namespace, so its sockets and BPF
    /// attachments live there. Other threads are not affected.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&path)?;
                    Ok(f())
                })
                .join()
                .map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    anyhow::anyhow!("thread in netns {} panicked: {message}", self.name)
                })?
        })
    }

    /// Starts `f` on a thread inside this namespace and returns its handle (for servers
    /// that run alongside the test).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            Ok(f())
        })
    }
}

fn enter(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd; it affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veths (and their XDP links with them).
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A filesystem mounted for a test, unmounted (lazily, so that a process still in it does
/// not keep it) and its mount point removed on drop.
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    /// A private bpffs mounted on the host outside /sys: visible inside `ip netns exec`
    /// (which remounts /sys) and alive across agent restarts. Unmounting it unpins
    /// everything under it.
    pub fn bpffs(path: &Path) -> anyhow::Result<Self> {
        Self::new(path, &["-t", "bpf", "bpf"])
    }

    /// A tmpfs of `size` bytes (as mount's `size=` takes it, e.g. "4m"): a disk that fills.
    pub fn tmpfs(path: &Path, size: &str) -> anyhow::Result<Self> {
        Self::new(path, &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
    }

    fn new(path: &Path, how: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let text = path.to_str().context("non-UTF-8 path")?;
        run("mount", &[how, &[text]].concat())?;
        Ok(Self { path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the mount's options in place (a tmpfs's `size=`, say).
    pub fn remount(&self, options: &str) -> anyhow::Result<()> {
        let text = self.path.to_str().context("non-UTF-8 path")?;
        run("mount", &["-o", &format!("remount,{options}"), text])?;
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(text) = self.path.to_str()
            && let Err(e) = run("umount", &["-l", text])
        {
            eprintln!("cleanup: {e:#}");
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

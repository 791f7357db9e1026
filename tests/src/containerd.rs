//! (rig: containerd)
//! A private containerd and a real CNI client (`ctr run --cni`) for the containerd tier.
//!
//! # What is private, and how
//!
//! * [`Containerd::start`] runs its own `containerd` as a child process with its own config
//!   file, root, state dir and gRPC/ttrpc sockets, all under one rig directory
//!   `$TMPDIR/netkit-containerd/<pid>-<n>-<random>/`, and its own containerd namespace
//!   `netkit-<pid>-<n>` (which also names the containers' cgroup parent). The CRI plugin
//!   and the snapshotters we do not need are disabled: `ctr run --rootfs DIR` uses an
//!   unpacked directory, no image and no snapshotter.
//! * CNI dirs. `ctr run --cni` in containerd 1.6 calls `gocni.New(gocni.WithDefaultConf)`:
//!   the conf dir `/etc/cni/net.d`, bin dir `/opt/cni/bin` and libcni's cache dir
//!   `/var/lib/cni` are hard-coded, with no flag or environment variable to change them.
//!   Installing into the real dirs would make parallel tests see each other's conflists
//!   (go-cni takes the lexically first one). Instead every `ctr run` starts in a **private
//!   mount namespace** (`unshare(CLONE_NEWNS)` in `pre_exec`, `/` made rprivate) where the
//!   container's own conf dir and bin dir are bind-mounted over `/etc/cni/net.d` and
//!   `/opt/cni/bin`, and the rig's CNI state dir over `/var/lib/cni`. go-cni runs the
//!   plugins from the `ctr` process, so they inherit that namespace (and find each other,
//!   e.g. `ptp` -> `host-local`, through `CNI_PATH=/opt/cni/bin`). The host only gets the
//!   three (empty) mount-point directories, created if missing and never removed.
//! * CNI DEL. containerd 1.6's `ctr` calls CNI DEL only from a *non-detached* `ctr run`,
//!   when the task exits (`ctr run -d` + `ctr task/container delete` never call DEL). So
//!   each container's `ctr run` stays a child of the test for the container's life; tearing
//!   down is `ctr task kill -s SIGKILL`, after which that `ctr` calls CNI DEL — with an
//!   **empty `CNI_NETNS`** (the task and its netns are gone by then) — and deletes the task.
//!   The rig fails [`Container::delete`] if `ctr` logged an error (a failed DEL is only
//!   logged by `ctr`, not reflected in its exit status).
//! * Each container gets its own busybox rootfs (a copy of Debian's busybox-static plus
//!   applet symlinks), its own FIFO dir, and the rig's runc root (`--runc-root`), so nothing
//!   lands in `/run/containerd` except the shims' sockets (`/run/containerd/s/<hash>`, a
//!   path containerd 1.6 hard-codes; removed by each shim when it exits).
//!
//! # Cleanup
//!
//! Drop (also on panic) deletes containers, stops containerd, then sweeps the rig
//! directory: kills any process still referring to it (shims, container processes),
//! lazily unmounts anything mounted under it, removes the namespace's cgroup directories
//! and the directory itself. A rig whose test process died without unwinding (Ctrl-C,
//! SIGKILL) is swept by the next [`Containerd::start`] on the machine: each rig dir records
//! its owner (pid and start time), and those whose owner is gone are swept. What a sweep
//! cannot undo: a container killed that way got no CNI DEL (its veth goes with its netns,
//! but plugin state outside the rig dir stays).

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cmd;

/// A long-running container command.
pub const SLEEP: &[&str] = &["sleep", "3600"];

/// How long to wait for containerd to answer, a task to run or `ctr run` to finish.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// The CNI dirs `ctr run --cni` (go-cni defaults) uses; bind-mounted over in its mount ns.
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const CNI_CACHE_DIR: &str = "/var/lib/cni";

/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGINS_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process-unique number (for names: combine with the pid for host-unique ones).
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `prefix-<pid>-<n>`: unique on the host among live processes, and across re-runs.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_id())
}

/// Where all rigs live; each rig dir is named `<pid>-<n>-<random>`.
fn rigs_base() -> PathBuf {
    std::env::temp_dir().join("netkit-containerd")
}

/// A private containerd daemon. See the module docs.
pub struct Containerd {
    dir: PathBuf,
    namespace: String,
    socket: PathBuf,
    daemon: Option<Child>,
}

impl Containerd {
    /// Start a private containerd and wait until it answers on its socket.
    pub fn start() -> Containerd {
        check_prerequisites();
        let base = rigs_base();
        fs::create_dir_all(&base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
        reap_stale_rigs(&base);

        let pid = std::process::id();
        let n = next_id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{pid}-{n}-"))
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a rig dir in {}: {e}", base.display()))
            .keep();
        // From here on the Drop of `rig` cleans up, even if starting fails.
        let mut rig = Containerd {
            namespace: namespace_for(pid, n),
            socket: dir.join("containerd.sock"),
            dir,
            daemon: None,
        };
        let start_time = process_start_time(pid as i32).expect("own start time");
        // Written aside and renamed into place: a reaper (another thread or process) must
        // never read a half-written (empty) owner, which would mark this live rig stale.
        let owner_tmp = rig.dir.join("owner.tmp");
        fs::write(&owner_tmp, format!("{pid} {start_time}")).expect("write owner");
        fs::rename(&owner_tmp, rig.dir.join("owner")).expect("rename owner");
        for sub in ["root", "state", "runc", "cni-state", "containers"] {
            fs::create_dir_all(rig.dir.join(sub)).expect("mkdir in rig dir");
        }
        let config = rig.dir.join("config.toml");
        fs::write(&config, rig.config_toml()).expect("write containerd config");

        let log = File::create(rig.dir.join("containerd.log")).expect("create containerd.log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start containerd: {e} (apt-get install containerd)")
            });
        rig.daemon = Some(daemon);

        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = rig
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten())
            {
                panic!(
                    "containerd exited with {status} while starting\n{}",
                    rig.containerd_log()
                );
            }
            let out = cmd::output(
                Command::new("ctr")
                    .arg("--address")
                    .arg(&rig.socket)
                    .arg("version"),
            );
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within {TIMEOUT:?}\n{}\n{}",
                rig.socket.display(),
                String::from_utf8_lossy(&out.stderr),
                rig.containerd_log()
            );
            sleep(POLL);
        }
        rig
    }

    fn config_toml(&self) -> String {
        let root = self.dir.join("root");
        let state = self.dir.join("state");
        // No debug or metrics listeners (empty addresses). `opt` would create /opt/containerd.
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"#,
            root = root.display(),
            state = state.display(),
            sock = self.socket.display(),
        )
    }

    /// The rig directory (everything the rig creates lives under it; removed on drop).
    /// Tests may put their own state here, e.g. a `host-local` `dataDir`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        &self.socket
    }

    /// The containerd namespace the rig's containers live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What `ctr run` sees as `/var/lib/cni`: libcni's result cache (`results/`) and, for
    /// a `host-local` without `dataDir`, its allocations (`networks/<name>/`). Shared by
    /// all containers of the rig, so they share IPAM state.
    pub fn cni_state_dir(&self) -> PathBuf {
        self.dir.join("cni-state")
    }

    /// `ctr` talking to this containerd, in its namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    /// The containerd log so far (for failure messages).
    pub fn containerd_log(&self) -> String {
        tail(&self.dir.join("containerd.log"), 60)
    }

    /// Run a container with `ctr run --cni --rootfs` (a busybox rootfs), its network set
    /// up by CNI from `conflist` (JSON text; the only network `ctr` sees) with
    /// `cni_plugins` in the CNI bin dir (each symlinked under its file name; see
    /// [`reference_plugins`]). Returns once the task runs `cmd` (CNI ADD is done by then);
    /// panics with `ctr`'s output if it fails. The container id is `name-<pid>-<n>`.
    pub fn run_container(
        &self,
        name: &str,
        conflist: &str,
        cni_plugins: &[&Path],
        cmd: &[&str],
    ) -> Container<'_> {
        assert!(!cmd.is_empty(), "run_container needs a command");
        let id = unique_name(name);
        let cdir = self.dir.join("containers").join(&id);
        let (conf_dir, bin_dir, fifo_dir) =
            (cdir.join("net.d"), cdir.join("bin"), cdir.join("fifo"));
        for d in [&conf_dir, &bin_dir, &fifo_dir] {
            fs::create_dir_all(d).expect("mkdir container dir");
        }
        serde_json::from_str::<serde_json::Value>(conflist)
            .unwrap_or_else(|e| panic!("conflist is not JSON: {e}\n{conflist}"));
        fs::write(conf_dir.join("10-test.conflist"), conflist).expect("write conflist");
        for plugin in cni_plugins {
            let file = plugin
                .file_name()
                .unwrap_or_else(|| panic!("CNI plugin path {} has no file name", plugin.display()));
            assert!(
                plugin.exists(),
                "CNI plugin {} does not exist",
                plugin.display()
            );
            let abs = fs::canonicalize(plugin).expect("canonicalize CNI plugin path");
            symlink(&abs, bin_dir.join(file)).unwrap_or_else(|e| {
                panic!(
                    "symlink CNI plugin {}: {e} (listed twice?)",
                    plugin.display()
                )
            });
        }
        let rootfs = cdir.join("rootfs");
        build_busybox_rootfs(&rootfs);

        let log_path = cdir.join("ctr-run.log");
        let log = File::create(&log_path).expect("create ctr-run.log");
        let mut run = self.ctr();
        run.arg("run")
            .arg("--cni")
            .arg("--rootfs")
            .arg("--env")
            .arg("PATH=/bin")
            .arg("--fifo-dir")
            .arg(&fifo_dir)
            .arg("--runc-root")
            .arg(self.dir.join("runc"))
            .arg(&rootfs)
            .arg(&id)
            .args(cmd)
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        in_private_cni_mounts(
            &mut run,
            &[
                (&conf_dir, CNI_CONF_DIR),
                (&bin_dir, CNI_BIN_DIR),
                (&self.cni_state_dir(), CNI_CACHE_DIR),
            ],
        );
        let child = run
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {run:?}: {e}"));
        let mut container = Container {
            rig: self,
            id,
            dir: cdir,
            fifo_dir,
            log: log_path,
            run: Some(child),
            pid: 0,
            deleted: false,
        };
        container.pid = container.wait_running();
        container
    }

    /// Ids of the containers containerd knows in the rig's namespace.
    pub fn container_ids(&self) -> Vec<String> {
        let out = cmd::run(self.ctr().args(["containers", "list", "--quiet"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// `(id, pid, status)` of the rig's tasks, e.g. `("c-1-2", 1234, "RUNNING")`.
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        let out = cmd::run(self.ctr().args(["tasks", "list"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?.to_string();
                let pid = f.next()?.parse().ok()?;
                Some((id, pid, f.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers normally are gone already (they borrow the rig); catch ones made by
        // hand through `ctr()`. Without their `ctr run` nobody calls CNI DEL for them.
        if self.daemon.is_some() {
            let ids = self.ctr().args(["containers", "list", "--quiet"]).output();
            for id in ids
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
            {
                eprintln!("containerd rig: removing leftover container {id}");
                let _ = self
                    .ctr()
                    .args(["tasks", "kill", "--signal", "SIGKILL", id])
                    .output();
                let _ = wait_task_gone(self, id);
                let _ = self.ctr().args(["tasks", "delete", "--force", id]).output();
                let _ = self.ctr().args(["containers", "delete", id]).output();
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            terminate(&mut daemon, Duration::from_secs(5));
        }
        let killed = sweep_rig(&self.dir, &self.namespace);
        if killed > 0 {
            eprintln!(
                "containerd rig: had to kill {killed} leftover process(es) of {}",
                self.dir.display()
            );
        }
    }
}

/// A running container of a [`Containerd`] rig, with its attached `ctr run`.
pub struct Container<'a> {
    rig: &'a Containerd,
    id: String,
    dir: PathBuf,
    fifo_dir: PathBuf,
    log: PathBuf,
    run: Option<Child>,
    pid: u32,
    deleted: bool,
}

impl Container<'_> {
    /// The container id (also the CNI `CNI_CONTAINERID`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the task's init process; its netns is `/proc/<pid>/ns/net`.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Path of the container's network namespace (valid while it runs).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// The output of `ctr run` so far (container stdout/stderr and `ctr`'s own log).
    pub fn ctr_run_log(&self) -> String {
        tail(&self.log, 100)
    }

    /// Run `cmd` in the container (`ctr task exec`, unique exec id); any exit status.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let exec_id = format!("exec-{}", next_id());
        cmd::output(
            self.rig
                .ctr()
                .args(["tasks", "exec", "--exec-id", &exec_id, "--fifo-dir"])
                .arg(&self.fifo_dir)
                .arg(&self.id)
                .args(cmd),
        )
    }

    /// [`Container::exec`] whose output cannot get lost: `cmd` runs under the container's
    /// `sh` with stdout, stderr and exit status written to files in its `/tmp` (the rig's
    /// rootfs dir on the host), read once the exec is over. Under load, containerd 1.6's
    /// `ctr tasks exec` now and then exits 0 without having copied any of the process's
    /// stdout; use this where the output is what the test checks.
    pub fn exec_captured(&self, cmd: &[&str]) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let n = next_id();
        let files = ["out", "err", "rc"].map(|ext| format!("/tmp/.exec-{n}.{ext}"));
        let script = format!("\"$@\" >{} 2>{}; echo $? >{}", files[0], files[1], files[2]);
        let mut args = vec!["sh", "-c", script.as_str(), "sh"];
        args.extend_from_slice(cmd);
        let raw = self.exec(&args);
        let host = |f: &str| self.dir.join("rootfs").join(f.trim_start_matches('/'));
        let rc = fs::read_to_string(host(&files[2]));
        let out = fs::read(host(&files[0])).unwrap_or_default();
        let err = fs::read(host(&files[1])).unwrap_or_default();
        for f in &files {
            let _ = fs::remove_file(host(f));
        }
        match rc.ok().and_then(|rc| rc.trim().parse::<i32>().ok()) {
            Some(code) => Output {
                status: std::process::ExitStatus::from_raw(code << 8),
                stdout: out,
                stderr: err,
            },
            // The shell never got to record a status: what `ctr` said is all there is.
            None => raw,
        }
    }

    /// Run `cmd` in the container, panicking unless it exits 0; returns its stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        // Captured: `ctr tasks exec` of containerd 1.6 now and then loses stdout under load.
        let out = self.exec_captured(cmd);
        assert!(
            out.status.success(),
            "in container {}: {cmd:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.id,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// IPv4 address and prefix length of `ifname` in the container.
    pub fn ipv4_of(&self, ifname: &str) -> (Ipv4Addr, u8) {
        let text = self.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", ifname]);
        let mut words = text.split_whitespace();
        let cidr = words
            .find(|w| *w == "inet")
            .and_then(|_| words.next())
            .unwrap_or_else(|| panic!("no IPv4 address on {ifname} in {}:\n{text}", self.id));
        let (addr, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
        (
            addr.parse()
                .unwrap_or_else(|e| panic!("bad address {cidr}: {e}")),
            len.parse()
                .unwrap_or_else(|e| panic!("bad prefix {cidr}: {e}")),
        )
    }

    /// IPv4 address of `eth0` (the interface CNI set up).
    pub fn ip(&self) -> Ipv4Addr {
        self.ipv4_of("eth0").0
    }

    /// Stop and remove the container, panicking if anything went wrong — in particular if
    /// `ctr` logged an error, such as a failed CNI DEL. Returns the `ctr run` log.
    pub fn delete(self) -> String {
        let id = self.id.clone();
        self.try_delete()
            .unwrap_or_else(|e| panic!("deleting container {id}: {e}"))
    }

    /// [`Container::delete`] that returns what went wrong instead of panicking (the
    /// container is removed as far as possible either way).
    pub fn try_delete(mut self) -> Result<String, String> {
        self.teardown()
    }

    fn wait_running(&mut self) -> u32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(run) = self.run.as_mut()
                && let Ok(Some(status)) = run.try_wait()
            {
                panic!(
                    "ctr run for {} exited with {status} before the task ran:\n{}\n--- containerd\n{}",
                    self.id,
                    self.ctr_run_log(),
                    self.rig.containerd_log()
                );
            }
            if let Some((_, pid, _)) = self
                .rig
                .tasks()
                .into_iter()
                .find(|(id, _, status)| *id == self.id && status == "RUNNING")
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "container {} not running after {TIMEOUT:?}:\n{}",
                self.id,
                self.ctr_run_log()
            );
            sleep(POLL);
        }
    }

    /// Kill the task; its `ctr run` then calls CNI DEL and deletes the task; then delete
    /// the container. Err describes what failed (after doing as much as possible).
    fn teardown(&mut self) -> Result<String, String> {
        if self.deleted {
            return Ok(String::new());
        }
        self.deleted = true;
        let mut errors = Vec::new();
        // Not needed if the command has exited by itself (then `ctr run` is done or busy
        // with DEL, and the kill fails with "not found").
        let kill = self
            .rig
            .ctr()
            .args(["tasks", "kill", "--signal", "SIGKILL", &self.id])
            .output();
        let mut run_killed = false;
        if let Some(mut run) = self.run.take() {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                match run.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => sleep(POLL),
                    _ => {
                        let kill = match &kill {
                            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                            Err(e) => e.to_string(),
                        };
                        errors.push(format!(
                            "ctr run did not exit within {TIMEOUT:?} (ctr tasks kill: {})",
                            kill.trim()
                        ));
                        let _ = run.kill();
                        let _ = run.wait();
                        run_killed = true;
                        break;
                    }
                }
            }
        }
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if log.contains("level=error") || log.contains("level=fatal") {
            errors.push("ctr run logged an error (CNI DEL failed?)".to_string());
        }
        // `ctr run` deletes the task itself, unless it had to be killed.
        if run_killed {
            let _ = self
                .rig
                .ctr()
                .args(["tasks", "delete", "--force", &self.id])
                .output();
        }
        match self
            .rig
            .ctr()
            .args(["containers", "delete", &self.id])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(format!(
                "ctr containers delete: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("ctr containers delete: {e}")),
        }
        if errors.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
            Ok(log)
        } else {
            Err(format!("{}\n--- ctr run log\n{log}", errors.join("\n")))
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("containerd rig: deleting container {}: {e}", self.id);
        }
    }
}

/// Paths of the reference CNI plugins (Debian `containernetworking-plugins`) by name,
/// e.g. `reference_plugins(&["ptp", "host-local"])`.
pub fn reference_plugins(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = Path::new(REFERENCE_PLUGINS_DIR).join(n);
            assert!(
                p.exists(),
                "{} missing (apt-get install containernetworking-plugins)",
                p.display()
            );
            p
        })
        .collect()
}

/// A conflist for the reference `ptp` plugin with `host-local` IPAM on `subnet`, no IP
/// masquerade (no iptables), a default route via the host, allocations in `data_dir`.
pub fn ptp_conflist(network: &str, subnet: &Subnet, data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet.cidr() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": data_dir,
            },
        }],
    })
    .to_string()
}

/// A `10.x.y.0/24` reserved for this process while the value lives: an exclusive `flock`
/// on `$TMPDIR/netkit-subnets/10.x.y.lock` (released by the kernel if the process dies;
/// the file is removed on drop),
/// and no host route overlapping it. Candidates `10.200.0.0`–`10.239.255.0`, starting
/// from a pid-derived one.
pub struct Subnet {
    octets: [u8; 2],
    lock: File,
    lock_path: PathBuf,
}

impl Drop for Subnet {
    fn drop(&mut self) {
        // Unlink while still holding the lock (see `allocate`); closing `lock` unlocks.
        let _ = fs::remove_file(&self.lock_path);
        let _ = self.lock.unlock();
    }
}

impl Subnet {
    pub fn allocate() -> Subnet {
        const FIRST: u32 = 200;
        const COUNT: u32 = 40 * 256;
        let dir = std::env::temp_dir().join("netkit-subnets");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let start = std::process::id()
            .wrapping_mul(97)
            .wrapping_add(next_id() * 13)
            % COUNT;
        let routes = host_ipv4_routes();
        for i in 0..COUNT {
            let k = (start + i) % COUNT;
            let octets = [(FIRST + k / 256) as u8, (k % 256) as u8];
            let net = u32::from(Ipv4Addr::new(10, octets[0], octets[1], 0));
            if routes
                .iter()
                .any(|&(dst, mask)| mask != 0 && (dst ^ net) & mask & 0xffff_ff00 == 0)
            {
                continue;
            }
            let path = dir.join(format!("10.{}.{}.lock", octets[0], octets[1]));
            let file = File::create(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            // The holder unlinks the file before unlocking (Drop), so a lock taken on an
            // unlinked file is stale: it counts only if the path still names our file.
            let ours = |f: &File| {
                let (a, b) = (fs::metadata(&path), f.metadata());
                matches!((a, b), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
            };
            if file.try_lock().is_ok() && ours(&file) {
                return Subnet {
                    octets,
                    lock: file,
                    lock_path: path,
                };
            }
        }
        panic!("no free 10.200-239.x.0/24 subnet");
    }

    /// e.g. `10.201.17.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.octets[0], self.octets[1])
    }

    /// The `n`th address, e.g. `host(1)` = `10.x.y.1`.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octets[0], self.octets[1], n)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 10 && o[1] == self.octets[0] && o[2] == self.octets[1]
    }
}

/// `(destination, mask)` of the host's IPv4 routes (main table, /proc/net/route).
fn host_ipv4_routes() -> Vec<(u32, u32)> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Hex of the address in network byte order, as read by a little-endian host.
            let parse = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| u32::from_be(v.to_le()))
            };
            Some((parse(f.get(1)?)?, parse(f.get(7)?)?))
        })
        .collect()
}

/// Bind-mount each `(source, target)` in a new private mount namespace of the child
/// before it execs. Targets are created on the host if missing (empty dirs, kept).
fn in_private_cni_mounts(cmd: &mut Command, binds: &[(&Path, &str)]) {
    let mut pairs = Vec::new();
    for (src, dst) in binds {
        fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {dst}: {e}"));
        let c = |p: &OsStr| CString::new(p.as_bytes()).expect("path without NUL");
        pairs.push((c(src.as_os_str()), c(OsStr::new(dst))));
    }
    // SAFETY: the closure runs between fork and exec; it only makes raw syscalls on
    // memory prepared before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let none = std::ptr::null();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(none, c"/".as_ptr(), none, flags, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for (src, dst) in &pairs {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A minimal rootfs: `/bin/busybox` (static) with a symlink per applet, `/etc/passwd`,
/// `/etc/group`, `/etc/hosts`, and empty `/tmp`, `/root`.
pub fn build_busybox_rootfs(rootfs: &Path) {
    static APPLETS: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    let (busybox, applets) = APPLETS.get_or_init(|| {
        let busybox = PathBuf::from("/bin/busybox");
        assert!(
            busybox.exists() && is_static_elf(&busybox),
            "{} missing or not static (apt-get install busybox-static)",
            busybox.display()
        );
        let list = cmd::run_text("/bin/busybox", ["--list"]);
        (busybox, list.split_whitespace().map(String::from).collect())
    });
    let bin = rootfs.join("bin");
    for d in [
        bin.clone(),
        rootfs.join("etc"),
        rootfs.join("tmp"),
        rootfs.join("root"),
    ] {
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    fs::copy(busybox, bin.join("busybox")).expect("copy busybox into rootfs");
    for applet in applets.iter().filter(|a| *a != "busybox") {
        symlink("busybox", bin.join(applet)).expect("applet symlink");
    }
    let files = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
    ];
    for (path, text) in files {
        fs::write(rootfs.join(path), text).expect("write rootfs file");
    }
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is static.
fn is_static_elf(path: &Path) -> bool {
    let mut head = Vec::new();
    if File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .is_err()
        || head.len() < 64
        || &head[..5] != b"\x7fELF\x02"
    {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        head.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3)
    })
}

fn check_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the containerd tier needs root"
    );
    for (bin, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
            .unwrap_or(false);
        assert!(found, "{bin} not found in PATH (apt-get install {package})");
    }
}

fn namespace_for(pid: u32, n: u32) -> String {
    format!("netkit-{pid}-{n}")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Wait (a little) until task `id` no longer runs; never panics (used in Drop).
fn wait_task_gone(rig: &Containerd, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok(out) = rig.ctr().args(["tasks", "list"]).output() else {
            return false;
        };
        let running = String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&id) && f.get(2) == Some(&"RUNNING")
        });
        if !running {
            return true;
        }
        sleep(POLL);
    }
    false
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on our own child (not yet reaped, so the pid is ours).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sweep rig dirs whose owner process is gone (the test died without unwinding).
fn reap_stale_rigs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '-');
        let (Some(Ok(pid)), Some(Ok(n))) = (
            parts.next().map(str::parse::<i32>),
            parts.next().map(str::parse::<u32>),
        ) else {
            continue;
        };
        // The owner is the process with that pid *and* start time (the pid may be reused);
        // a zombie is dead. A rig still being created has no owner file yet: skip it.
        let Ok(owner) = fs::read_to_string(entry.path().join("owner")) else {
            continue;
        };
        if process_start_time(pid).is_none_or(|t| owner.trim() != format!("{pid} {t}")) {
            eprintln!("containerd rig: sweeping stale rig {name}");
            sweep_rig(&entry.path(), &namespace_for(pid as u32, n));
        }
    }
}

/// Start time (clock ticks after boot) of a live, non-zombie process.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    // State is field 3; starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// Remove every trace of a rig: kill its processes (see [`processes_using`]), remove the
/// sockets of shims killed that way, lazily unmount what is mounted under it, remove its
/// namespace's cgroups, delete the dir. Returns how
/// many processes had to be killed.
fn sweep_rig(dir: &Path, namespace: &str) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    // Shim sockets live outside the rig dir, in /run/containerd/s/<hash>; each bundle
    // records its shim's address. A shim removes its socket when it exits normally.
    let shim_sockets = shim_socket_paths(dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_using(dir, namespace, me);
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: plain kill(2).
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        sleep(Duration::from_millis(50));
    }
    for socket in shim_sockets {
        let _ = fs::remove_file(socket);
    }
    let mut mounts: Vec<PathBuf> = mountinfo()
        .into_iter()
        .filter(|(mp, _)| mp.starts_with(dir))
        .map(|(mp, _)| mp)
        .collect();
    mounts.reverse();
    for mp in mounts {
        if let Ok(c) = CString::new(mp.as_os_str().as_bytes()) {
            // SAFETY: umount2 on a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    // A killed process leaves its cgroup only once reaped (by the shim, or by init when
    // the shim is gone too), so retry for a while.
    let cgroups: Vec<PathBuf> = mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(mp, _)| mp.join(namespace))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cgroups.iter().for_each(|cg| remove_cgroup_tree(cg));
        let left: Vec<&PathBuf> = cgroups.iter().filter(|cg| cg.exists()).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("containerd rig: cannot remove cgroups {left:?}");
            break;
        }
        sleep(Duration::from_millis(50));
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!("containerd rig: cannot remove {}: {e}", dir.display());
    }
    killed
}

/// Socket paths from the `address` files (`unix:///run/containerd/s/<hash>`) of the
/// rig's task bundles (`state/io.containerd.runtime.v2.task/<namespace>/<id>/`).
fn shim_socket_paths(dir: &Path) -> Vec<PathBuf> {
    let tasks = dir.join("state").join("io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    for ns in fs::read_dir(tasks).into_iter().flatten().flatten() {
        for bundle in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let Ok(address) = fs::read_to_string(bundle.path().join("address"))
                && let Some(path) = address.trim().strip_prefix("unix://")
            {
                out.push(PathBuf::from(path));
            }
        }
    }
    out
}

/// Live (non-zombie) pids, other than `me`, whose command line mentions `dir` (containerd, `ctr`, shims) or
/// that are in a cgroup under `/<namespace>/` (container processes: their root link cannot
/// be used, it reads `/` from outside their mount namespace).
fn processes_using(dir: &Path, namespace: &str, me: u32) -> Vec<i32> {
    let needle = dir.as_os_str().as_bytes();
    let cgroup_prefix = format!(":/{namespace}/");
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid as u32 != me && process_start_time(pid).is_some())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
                || cgroups.lines().any(|l| l.contains(&cgroup_prefix))
        })
        .collect()
}

/// `(mount point, fs type)` of this process's mount namespace.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape_mountinfo(mp)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// rmdir a cgroup and its child cgroups, deepest first (fails quietly if still in use).
fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(path);
    }
}

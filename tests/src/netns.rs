//! The netns rig: named network namespaces exactly where `ip netns add` puts them
//! (`/run/netns/<name>`, so `ip -n`, `ip netns exec` and `CNI_NETNS=` all work on them),
//! closures and child processes run inside them, veth pairs across them, and private bpffs
//! directories. Every object removes what it made on Drop, also while a test panics, and
//! every name is unique per process and per call, so tests run in parallel and re-run.
//!
//! Names start with [`MARK`] and carry the creating pid: the first rig of a process reaps
//! what earlier, killed runs left behind (entries whose pid is gone).

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use netkit_netlink::link::Pair;
use netkit_netlink::{Kernel as _, KernelError, KernelResult, Ns, RtKernel};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::cmd;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// First component of every netns and bpffs name the rigs make (`nkt-<prefix>-<pid>-<n>`).
pub const MARK: &str = "nkt";

/// A named network namespace at `/run/netns/<name>`, with `lo` up. Dropping it unmounts and
/// removes the file; the kernel then destroys the namespace and its links as soon as nothing
/// else holds it (a child process still running inside, an fd, a [`Netns::command`] not yet
/// dropped). The destruction is asynchronous: links vanish a moment after Drop returns.
pub struct Netns {
    name: String,
    path: PathBuf,
    /// Shared with the `pre_exec` hooks of [`Netns::command`], so a Command outliving the
    /// Netns can never setns into a recycled fd number.
    fd: Arc<OwnedFd>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

impl Netns {
    /// Create a namespace named `nkt-<prefix>-<pid>-<n>` and bring its `lo` up.
    pub fn new(prefix: &str) -> Netns {
        assert!(
            !prefix.is_empty() && !prefix.contains('/'),
            "netns prefix {prefix:?} must be a non-empty file name part"
        );
        prepare_netns_dir();
        let (name, path) = loop {
            let name = unique_name(prefix);
            let path = Path::new(NETNS_DIR).join(&name);
            // O_EXCL: a file left by a dead process with a recycled pid is skipped, not reused.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o000)
                .open(&path)
            {
                Ok(_) => break (name, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        };

        // unshare(CLONE_NEWNET) moves the calling thread for good, so do it on a throwaway
        // thread; the bind mount keeps the namespace alive after that thread exits.
        let target = path.clone();
        let made = thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || -> Result<(), String> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET): {e} (the rigs need root)"))?;
                // thread-self, not self: only this thread is in the new namespace.
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind-mounting the new netns on {}: {e}", target.display()))?;
                set_link_up("lo").map_err(|e| format!("bringing lo up: {e}"))
            })
            .expect("spawning the netns-creating thread")
            .join()
            .unwrap_or_else(|_| Err("the netns-creating thread panicked".into()));
        if let Err(msg) = made {
            // Best effort: a failed mount leaves just the empty file.
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(&path);
            panic!("cannot create network namespace {name}: {msg}");
        }
        let fd =
            File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        Netns {
            name,
            path,
            fd: Arc::new(fd.into()),
        }
    }

    /// The name `ip -n` / `ip netns exec` take.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, e.g. for `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on a fresh thread that has joined this namespace, and return its result (a
    /// panic in `f` is re-raised here). The caller's thread never changes namespace. Sockets
    /// opened in `f` (netlink included) stay bound to this namespace after `f` returns.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("in-{}", self.name))
                .spawn_scoped(scope, || {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                    f()
                })
                .expect("spawning a thread for Netns::run");
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Switch the *current* thread into this namespace until the guard drops. Prefer
    /// [`Netns::run`]; this is for code that must stay on the caller's thread.
    pub fn enter(&self) -> Entered<'_> {
        let home = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("cannot open this thread's netns: {e}"));
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
        Entered {
            ns: self,
            home: home.into(),
            _not_send: PhantomData,
        }
    }

    /// A Command whose child joins this namespace before exec. Unlike `ip netns exec` it
    /// keeps the caller's mount namespace, so the child sees the real `/sys/fs/bpf` (but
    /// `/sys/class/net` still describes the caller's namespace: ask netlink, not sysfs).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        let fd = Arc::clone(&self.fd);
        let join = move || {
            // SAFETY: setns(2) on an fd the Arc keeps open; no memory is touched.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls
        // are allowed: it makes one setns(2) syscall and reads errno; nothing allocates.
        unsafe { command.pre_exec(join) };
        command
    }

    /// `sh -c script` inside the namespace; panics (with both output streams) unless it
    /// exits 0.
    pub fn sh(&self, script: &str) -> Output {
        cmd::run(self.command("sh").arg("-c").arg(script))
    }

    /// `ip ARGS` inside the namespace (arguments split on whitespace); panics unless it
    /// exits 0; returns stdout.
    pub fn ip(&self, args: &str) -> String {
        At::Ns(self).ip(args)
    }

    /// True when `addr` answers an ICMP echo from inside this namespace (a few tries, one
    /// second each, so the first ARP/ND round does not make it flaky).
    pub fn ping(&self, addr: impl fmt::Display) -> bool {
        let addr = addr.to_string();
        (0..3).any(|_| {
            let (program, pre) = ping_program();
            let out = cmd::output(
                self.command(program)
                    .args(pre)
                    .args(["-c1", "-W1"])
                    .arg(&addr),
            );
            out.status.success()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Our fd (the `fd` field, dropped right after this) is the last reference the rig
        // holds; without the mount and the file nobody can find the namespace again.
        let result = match umount2(&self.path, MntFlags::MNT_DETACH) {
            Ok(()) => fs::remove_file(&self.path).map_err(|e| format!("remove: {e}")),
            Err(e) => Err(format!("umount: {e}")),
        };
        if let Err(msg) = result {
            report(format_args!(
                "cleaning up netns {}: {msg}",
                self.path.display()
            ));
        }
    }
}

/// The current thread, switched into a namespace by [`Netns::enter`]; switches back on Drop.
/// Not `Send`: moving it to another thread would "restore" the wrong thread.
pub struct Entered<'a> {
    ns: &'a Netns,
    home: OwnedFd,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET) {
            report(format_args!(
                "cannot leave netns {}: {e}; this thread stays inside it",
                self.ns.name
            ));
        }
    }
}

/// Where one end of a veth pair lives: the test process's own namespace, or a [`Netns`].
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    Host,
    Ns(&'a Netns),
}

impl<'a> From<&'a Netns> for At<'a> {
    fn from(ns: &'a Netns) -> At<'a> {
        At::Ns(ns)
    }
}

impl<'a> From<&'a Arc<Netns>> for At<'a> {
    fn from(ns: &'a Arc<Netns>) -> At<'a> {
        At::Ns(ns)
    }
}

impl At<'_> {
    /// A Command running in this place.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            At::Host => Command::new(program),
            At::Ns(ns) => ns.command(program),
        }
    }

    /// `ip ARGS` in this place (arguments split on whitespace); panics unless it exits 0;
    /// returns stdout.
    pub fn ip(&self, args: &str) -> String {
        let out = cmd::run(self.command("ip").args(args.split_whitespace()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` with a netlink connection bound to this place (`Ns::Host` to `f`). The
    /// connection's runtime is built on a thread of the test process's own namespace, so
    /// the caller may even be inside an async runtime, and no runtime is ever built
    /// inside a Netns (tokio would keep it alive: see `netkit_netlink::netns`).
    pub fn netlink<R: Send>(
        &self,
        f: impl FnOnce(&mut RtKernel) -> KernelResult<R> + Send,
    ) -> KernelResult<R> {
        let work = || {
            let mut kernel = match self {
                At::Host => RtKernel::new()?,
                At::Ns(ns) => RtKernel::in_netns(ns.path())?,
            };
            f(&mut kernel)
        };
        thread::scope(|scope| {
            scope
                .spawn(work)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Names of the links in this place, from the kernel (not sysfs, which would show the
    /// caller's namespace).
    pub fn links(&self) -> Vec<String> {
        let list = || {
            nix::net::if_::if_nameindex()
                .expect("if_nameindex")
                .iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        };
        match self {
            At::Host => list(),
            At::Ns(ns) => ns.run(list),
        }
    }
}

/// A veth pair made by [`veth_pair`]. Ends inside a [`Netns`] die with it; an end in the
/// host namespace is deleted (taking its peer along) when this drops, so keep it alive as
/// long as the link is needed.
#[must_use = "dropping the VethPair deletes its host end at once"]
#[derive(Debug)]
pub struct VethPair {
    pub a: String,
    pub b: String,
    /// The end to delete on Drop: the first end living in the host namespace, if any.
    host_end: Option<String>,
}

/// Create a veth pair `a.1 <-> b.1` with each end placed straight into its namespace (no
/// temporary name in the host) and both ends up. Names must be free in their namespace:
/// use [`unique_ifname`] for ends in the host.
pub fn veth_pair<'a, 'b>(a: (impl Into<At<'a>>, &str), b: (impl Into<At<'b>>, &str)) -> VethPair {
    let (at_a, name_a) = (a.0.into(), a.1);
    let (at_b, name_b) = (b.0.into(), b.1);
    for name in [name_a, name_b] {
        assert!(
            !name.is_empty() && name.len() <= 15,
            "interface name {name:?} must have 1 to 15 characters"
        );
    }
    // Create from the host side when there is one, so the end that moves is always in a
    // Netns, whose fd we hold.
    let (creator, first, peer_at, peer) = match (at_a, at_b) {
        (At::Ns(_), At::Host) => (at_b, name_b, at_a, name_a),
        _ => (at_a, name_a, at_b, name_b),
    };
    let peer_netns = match (creator, peer_at) {
        (At::Ns(x), At::Ns(y)) if std::ptr::eq(x, y) => None,
        (_, At::Ns(y)) => Some(y.fd.as_raw_fd()),
        (_, At::Host) => None, // both in the host
    };
    let pair = Pair {
        name: first,
        peer,
        peer_netns,
        attributes: &[],
    };
    creator
        .netlink(|k| k.add_link(pair.veth()))
        .unwrap_or_else(|e| panic!("creating veth pair {first} <-> {peer}: {e}"));
    // From here on the pair exists: the guard deletes a host end even if `up` fails.
    let pair = VethPair {
        a: name_a.to_owned(),
        b: name_b.to_owned(),
        host_end: match (at_a, at_b) {
            (At::Host, _) => Some(name_a.to_owned()),
            (_, At::Host) => Some(name_b.to_owned()),
            _ => None,
        },
    };
    for (at, name) in [(at_a, name_a), (at_b, name_b)] {
        at.netlink(|k| match k.link_by_name(Ns::Host, name)? {
            Some(link) => k.set_link_up(Ns::Host, link.index),
            None => Err(KernelError::from_errno(
                format!("find {name}"),
                libc::ENODEV,
            )),
        })
        .unwrap_or_else(|e| panic!("setting {name} up: {e}"));
    }
    pair
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let Some(name) = &self.host_end else { return };
        let deleted = At::Host.netlink(|k| match k.link_by_name(Ns::Host, name)? {
            Some(link) => k.delete_link(Ns::Host, link.index),
            None => Ok(()),
        });
        match deleted {
            // Already gone (e.g. its peer's namespace was destroyed first) is fine.
            Err(e) if !e.is_not_found() => report(format_args!("deleting veth {name}: {e}")),
            _ => {}
        }
    }
}

/// An interface name (≤ 15 characters) unique across threads and processes:
/// `<prefix><pid, 5 base-36 digits><counter, 3 base-36 digits>`. `prefix` has at most 7
/// characters.
pub fn unique_ifname(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix.len() <= 7,
        "interface name prefix {prefix:?} is longer than 7 characters"
    );
    // Fixed widths, so prefix + pid + counter can never be read two ways. Linux pids stay
    // below 2^22 < 36^5; the counter wraps after 36^3 names, long after their links are gone.
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 36u32.pow(3);
    format!("{prefix}{}{}", base36(std::process::id(), 5), base36(n, 3))
}

fn base36(mut value: u32, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = b"0123456789abcdefghijklmnopqrstuvwxyz"[(value % 36) as usize];
        value /= 36;
    }
    assert_eq!(value, 0, "value does not fit {width} base-36 digits");
    String::from_utf8(digits).expect("base-36 digits are ASCII")
}

/// A private directory under bpffs (`/sys/fs/bpf/nkt-<tag>-<pid>-<n>`), e.g. an agent's pin
/// root; removed with everything pinned in it on Drop. Mounts bpffs first if nothing is
/// mounted at `/sys/fs/bpf`.
#[derive(Debug)]
pub struct BpfDir {
    path: PathBuf,
}

impl BpfDir {
    pub fn new(tag: &str) -> BpfDir {
        prepare_bpffs();
        loop {
            let path = Path::new(BPFFS).join(unique_name(tag));
            match fs::create_dir(&path) {
                Ok(()) => return BpfDir { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfDir {
    fn drop(&mut self) {
        // Unlinking a pin releases the object once nothing else (fd, attachment) holds it.
        if let Err(e) = fs::remove_dir_all(&self.path) {
            report(format_args!("removing {}: {e}", self.path.display()));
        }
    }
}

/// Wait until `cond` holds, polling every 20 ms, for at most `timeout`. Returns whether it
/// held: namespace teardown in the kernel is asynchronous, so "gone" needs a moment.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `nkt-<prefix>-<pid>-<n>`, with `n` counting per process.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{MARK}-{prefix}-{}-{n}", std::process::id())
}

/// The pid inside a rig name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(MARK)?.strip_prefix('-')?;
    let mut parts = rest.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?; // the prefix
    Some(pid)
}

/// Left by a process that no longer exists, so nobody can clean it up but us.
fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Once per process: make `/run/netns` what iproute2 makes it, and reap stale namespaces.
fn prepare_netns_dir() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        fs::create_dir_all(NETNS_DIR).unwrap_or_else(|e| panic!("cannot create {NETNS_DIR}: {e}"));
        // Serialise with other test processes (the lock is on the directory's inode, which
        // the bind mount below does not change).
        let _lock = lock_dir(NETNS_DIR);
        // iproute2 makes /run/netns a shared mount point (binding it onto itself if needed)
        // so netns mounts propagate into other mount namespaces (`ip netns exec`, daemons).
        // Doing the same before our first mount matters: if `ip netns add` did it later, its
        // bind mount would hide every netns mounted here before.
        let make_shared = || {
            mount(
                None::<&str>,
                NETNS_DIR,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match make_shared() {
            Ok(()) => {}
            // EINVAL: not a mount point yet.
            Err(Errno::EINVAL) => {
                mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .unwrap_or_else(|e| panic!("cannot bind-mount {NETNS_DIR} onto itself: {e}"));
                make_shared()
                    .unwrap_or_else(|e| panic!("cannot make {NETNS_DIR} a shared mount: {e}"));
            }
            Err(e) => panic!("cannot make {NETNS_DIR} a shared mount: {e} (the rigs need root)"),
        }
        for name in stale_entries(NETNS_DIR) {
            let path = Path::new(NETNS_DIR).join(&name);
            let _ = umount2(&path, MntFlags::MNT_DETACH); // may be just an empty file
            match fs::remove_file(&path) {
                Ok(()) => eprintln!("netns rig: reaped stale netns {name}"),
                Err(e) => eprintln!("netns rig: cannot reap stale netns {name}: {e}"),
            }
        }
    });
}

/// Once per process: mount bpffs at /sys/fs/bpf if nothing is, and reap stale pin dirs.
fn prepare_bpffs() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if !bpffs_mounted() {
            let _lock = lock_dir(BPFFS);
            // Checked again under the lock: another process may have mounted it meanwhile,
            // and a second bpffs on top would hide the first one's pins.
            if !bpffs_mounted() {
                mount(
                    Some("bpf"),
                    BPFFS,
                    Some("bpf"),
                    MsFlags::empty(),
                    Some("mode=0700"),
                )
                .unwrap_or_else(|e| panic!("cannot mount bpffs on {BPFFS}: {e}"));
            }
        }
        for name in stale_entries(BPFFS) {
            match fs::remove_dir_all(Path::new(BPFFS).join(&name)) {
                Ok(()) => eprintln!("netns rig: reaped stale bpffs dir {name}"),
                Err(e) => eprintln!("netns rig: cannot reap stale bpffs dir {name}: {e}"),
            }
        }
    });
}

fn bpffs_mounted() -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/mountinfo: {e}"));
    // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <src> <opts>"
    info.lines().any(|line| {
        let mount_point = line.split(' ').nth(4);
        let fstype = line
            .split_once(" - ")
            .and_then(|(_, tail)| tail.split(' ').next());
        mount_point == Some(BPFFS) && fstype == Some("bpf")
    })
}

fn stale_entries(dir: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| is_stale(name))
        .collect()
}

fn lock_dir(dir: &str) -> Flock<File> {
    let file = File::open(dir).unwrap_or_else(|e| panic!("cannot open {dir}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {dir}: {e}"))
}

/// Set IFF_UP on a link of the calling thread's namespace.
fn set_link_up(ifname: &str) -> io::Result<()> {
    // Any AF_INET socket carries the interface ioctls; this one costs no child process.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data, for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    assert!(ifname.len() < req.ifr_name.len(), "interface name too long");
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags of `req`,
    // which outlives the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads `req`, which outlives the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ping to use: iputils' if installed, else busybox's (the VM initramfs has only that).
fn ping_program() -> (&'static str, &'static [&'static str]) {
    static FOUND: OnceLock<(&'static str, &'static [&'static str])> = OnceLock::new();
    *FOUND.get_or_init(|| {
        if on_path("ping") {
            ("ping", &[])
        } else if on_path("busybox") {
            ("busybox", &["ping"])
        } else {
            panic!("no ping: install iputils-ping or busybox")
        }
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// A cleanup failure: panic normally, but only log while unwinding, where a second panic
/// would abort the test binary and hide the first failure.
fn report(args: fmt::Arguments<'_>) {
    if thread::panicking() {
        eprintln!("netns rig: {args}");
    } else {
        panic!("netns rig: {args}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_rig_names_only() {
        assert_eq!(owner_pid("nkt-pod-1234-0"), Some(1234));
        assert_eq!(owner_pid("nkt-n0-a-b-77-12"), Some(77));
        assert_eq!(owner_pid("nkt-1234-0"), None);
        assert_eq!(owner_pid("cni-1234-0"), None);
        assert_eq!(owner_pid("nkt-x-y-0"), None);
    }

    #[test]
    fn unique_ifnames_fit_and_differ() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_ifname("abcdefg")).collect();
        assert_eq!(names.len(), 1000);
        assert!(names.iter().all(|n| n.len() == 15));
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 2), "10");
    }
}

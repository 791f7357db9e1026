//! The raw `bpf(2)` commands aya 0.14 does not offer for our use: link create for any
//! attach type (netkit has no aya API; tcx goes the same way so both are handled
//! alike), pin, get, update. Every `unsafe` is here.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::Path;

/// `enum bpf_cmd` values used here (include/uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `enum bpf_attach_type` values for the hooks we attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AttachType {
    TcxIngress = 46,
    TcxEgress = 47,
    NetkitPrimary = 54,
    NetkitPeer = 55,
}

impl AttachType {
    pub fn name(self) -> &'static str {
        match self {
            AttachType::TcxIngress => "tcx_ingress",
            AttachType::TcxEgress => "tcx_egress",
            AttachType::NetkitPrimary => "netkit_primary",
            AttachType::NetkitPeer => "netkit_peer",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{call} failed: {source}")]
    Syscall {
        call: &'static str,
        source: std::io::Error,
    },
    #[error("path {0:?} contains a NUL byte")]
    Path(String),
}

type Result<T> = std::result::Result<T, SysError>;

/// `attr.link_create` for tcx and netkit: the mprog fields follow the common head.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    /// `relative_fd`/`relative_id`; 0 with no flags appends after the existing programs.
    relative: u32,
    _pad: u32,
    expected_revision: u64,
}
const _: () = assert!(std::mem::size_of::<LinkCreateAttr>() == 32);

/// `attr` for `BPF_OBJ_PIN` / `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<ObjAttr>() == 24);

/// `attr.link_update`.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}
const _: () = assert!(std::mem::size_of::<LinkUpdateAttr>() == 16);

fn bpf<T>(cmd: libc::c_long, attr: &mut T, call: &'static str) -> Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` struct whose layout matches
    // the kernel's for `cmd` (asserted sizes above); the kernel reads at most `size` bytes
    // and treats the rest of `union bpf_attr` as zero.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(SysError::Syscall {
            call,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ret)
}

fn owned_fd(raw: libc::c_long, call: &'static str) -> Result<OwnedFd> {
    let raw = i32::try_from(raw).map_err(|_| SysError::Syscall {
        call,
        source: std::io::Error::other("kernel returned an out-of-range fd"),
    })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn c_path(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SysError::Path(path.display().to_string()))
}

/// Attach `prog` at `attach_type` on `ifindex` as a BPF link, appended after any
/// programs already there. For netkit, `ifindex` is the *primary* for both hooks.
pub fn link_create(prog: BorrowedFd<'_>, ifindex: u32, attach_type: AttachType) -> Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: attach_type as u32,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr, "BPF_LINK_CREATE")?;
    owned_fd(fd, "BPF_LINK_CREATE")
}

/// Atomically replace the program of a link: packets see the old or the new program,
/// never none.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr, "BPF_LINK_UPDATE").map(drop)
}

/// Pin a BPF object (link, map, program) at `path` on a bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr, "BPF_OBJ_PIN").map(drop)
}

/// Open the BPF object pinned at `path`.
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr, "BPF_OBJ_GET")?;
    owned_fd(fd, "BPF_OBJ_GET")
}

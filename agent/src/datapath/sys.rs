//! The raw `bpf(2)` commands aya 0.14 does not offer for our use: link create for any
//! attach type (netkit has no aya API; tcx goes the same way so both are handled
//! alike), pin, get, update; program load with an `fd_array` (kfuncs from modules);
//! walking the kernel's BTF objects. Every `unsafe` is here.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::Path;

/// `enum bpf_cmd` values used here (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_BTF_GET_NEXT_ID: libc::c_long = 23;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `enum bpf_attach_type` values for the hooks we attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AttachType {
    TcxIngress = 46,
    NetkitPeer = 55,
}

impl AttachType {
    pub fn name(self) -> &'static str {
        match self {
            AttachType::TcxIngress => "tcx_ingress",
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

/// `attr` for `BPF_PROG_LOAD`, up to `fd_array` (the fields after it stay zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
    fd_array: u64,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 128);

/// `attr` for the `*_GET_NEXT_ID` / `*_GET_FD_BY_ID` commands.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<IdAttr>() == 16);

/// `attr.info` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(std::mem::size_of::<InfoAttr>() == 16);

/// `struct bpf_btf_info`.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}
const _: () = assert!(std::mem::size_of::<BtfInfo>() == 32);

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

/// Load a `sched_cls` program. `insns` are raw `struct bpf_insn`s (8 bytes each);
/// `fd_array` holds the module BTF fds its kfunc calls index (`insn.off`). On failure the
/// verifier's log is returned in the error.
pub fn prog_load_sched_cls(
    name: &str,
    insns: &[u64],
    fd_array: &[i32],
) -> std::result::Result<OwnedFd, (SysError, String)> {
    let license = c"GPL";
    let mut log = vec![0u8; 1 << 20];
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        fd_array: if fd_array.is_empty() {
            0
        } else {
            fd_array.as_ptr() as u64
        },
        ..Default::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD") {
        Ok(fd) => owned_fd(fd, "BPF_PROG_LOAD").map_err(|e| (e, String::new())),
        Err(first) => {
            // Load again with the verifier log on, only to explain the failure.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD");
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err((first, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// The id of the kernel BTF object after `id` (0 starts the walk), or `None` at the end.
pub fn btf_next_id(id: u32) -> Result<Option<u32>> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    match bpf(BPF_BTF_GET_NEXT_ID, &mut attr, "BPF_BTF_GET_NEXT_ID") {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(SysError::Syscall { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Open the BTF object `id`.
pub fn btf_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    let fd = bpf(BPF_BTF_GET_FD_BY_ID, &mut attr, "BPF_BTF_GET_FD_BY_ID")?;
    owned_fd(fd, "BPF_BTF_GET_FD_BY_ID")
}

/// The name of a kernel BTF object ("vmlinux" or a module's), `None` for BTF that user
/// space loaded.
pub fn kernel_btf_name(btf: BorrowedFd<'_>) -> Result<Option<String>> {
    let mut name = [0u8; 64];
    let mut info = BtfInfo {
        name: name.as_mut_ptr() as u64,
        name_len: name.len() as u32,
        ..Default::default()
    };
    let mut attr = InfoAttr {
        bpf_fd: btf.as_raw_fd() as u32,
        info_len: std::mem::size_of::<BtfInfo>() as u32,
        info: &mut info as *mut BtfInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, "BPF_OBJ_GET_INFO_BY_FD")?;
    if info.kernel_btf == 0 {
        return Ok(None);
    }
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(Some(String::from_utf8_lossy(&name[..end]).into_owned()))
}

//! Confinement for the daemons: a root holding only the paths they need, few capabilities, a seccomp allow-list.
//!
//! # Theory of operation
//!
//! [`enter_sandbox`] is slirp4netns's `--enable-sandbox`, generalised: the process gets a mount
//! namespace of its own (through a user namespace when it is an ordinary user), an empty tmpfs
//! becomes its root with only the [`Keep`] paths bound into it at their own places, the host's
//! root is detached, and every capability but the listed ones leaves the effective, permitted,
//! inheritable, ambient and bounding sets. A compromised daemon then sees no host file beyond
//! those paths. CAP_SYS_PTRACE and CAP_SYS_CHROOT are never kept: the first would open the
//! host's root through /proc/PID/root of any process, the second lets setns(2) enter another
//! mount namespace. A process of the same uid holding no capability the daemon lacks stays
//! reachable through its /proc/PID/root (the kernel's ptrace access rule); there are few.
//! vswitchd keeps CAP_SYS_ADMIN for setns into network namespaces, and with it could mount
//! again: the seccomp filter, which lists neither mount(2) nor setns(2) beyond CLONE_NEWNET,
//! is what closes that, so the two go together.
//!
//! Capabilities and namespaces belong to threads, and a thread started earlier would keep the
//! host's root and every capability: the sandbox is entered while the process has one thread
//! (checked, [`ConfineError::Threads`]); the threads started afterwards inherit it.
//!
//! [`enter_seccomp`] installs an allow-list: a call that is not listed fails with EPERM. Killing
//! the process instead would make a rare unlisted call (a new glibc's, a path not exercised in
//! tests) take every container's network down at once; EPERM reaches the caller as an error
//! that names the operation, and the call is refused all the same (Docker's default profile
//! answers EPERM too). The filter is synchronised to every thread (TSYNC), so it may come
//! later than the sandbox. Calls listed without argument checks cost nothing: when a filter is
//! attached the kernel notes which call numbers it allows whatever the arguments and skips it
//! for those (Linux 5.11+), so the data path's reads, writes and mmsg calls never run it.
//! The filter program is compiled by rust-vmm's `seccompiler`, Firecracker's, which also checks
//! the architecture word (x86_64 and aarch64).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

/// Errors of confinement. After any but `Threads`, `Relative` and `Arch` the process may be
/// half-confined: it should exit.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// confinement must begin while the process has one thread, and it has N
    #[error("confinement must begin while the process has one thread, and it has {0}: enter it before any thread starts")]
    Threads(usize),
    /// a kept path must be absolute
    #[error("sandbox: kept path {0} is not absolute")]
    Relative(PathBuf),
    /// no CAP_SYS_ADMIN for a mount namespace, and a user namespace would cost held capabilities
    #[error(
        "sandbox: no CAP_SYS_ADMIN to make a mount namespace, and a user namespace would take away the capabilities this \
         process holds (effective set {0:#x}): give it CAP_SYS_ADMIN, or no capability at all"
    )]
    WouldLoseCaps(u64),
    /// a kernel call of the sandbox's set-up failed
    #[error("sandbox: {what}: {source}")]
    Sys { what: String, source: io::Error },
    /// the seccomp filter could not be installed
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// the seccomp filter could not be built
    #[error("seccomp: {0}")]
    Filter(#[from] seccompiler::BackendError),
    /// no seccomp filter for this architecture
    #[error("seccomp: no filter for the {0} architecture (x86_64 and aarch64 have one)")]
    Arch(&'static str),
}

fn sys(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ConfineError {
    let what = what.to_string();
    move |source| ConfineError::Sys { what, source }
}

/// A host path bound into the sandbox's root at the same place, with everything mounted below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Absolute; symbolic links are followed (the link itself is recreated when it lies
    /// outside every kept path, as /var/run -> /run). A path that does not exist is skipped.
    pub path: PathBuf,
    /// Writable inside; otherwise read-only (mounts below it keep their own flags).
    pub writable: bool,
    /// Mounts the host makes below the path later (`ip netns add` in /run/netns) appear
    /// inside too: the path is made a shared mount point on the host first, as iproute2 does.
    pub follow_mounts: bool,
}

impl Keep {
    pub fn ro(path: impl Into<PathBuf>) -> Self {
        Keep { path: path.into(), writable: false, follow_mounts: false }
    }

    pub fn rw(path: impl Into<PathBuf>) -> Self {
        Keep { path: path.into(), writable: true, follow_mounts: false }
    }

    pub fn following_mounts(mut self) -> Self {
        self.follow_mounts = true;
        self
    }
}

/// The capabilities a confined daemon may keep (numbers from linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Cap {
    /// Write the state directory and /etc/netns whoever owns them.
    DacOverride,
    /// Publish ports below 1024.
    NetBindService,
    /// Create and configure TAPs and links in containers' namespaces.
    NetAdmin,
    /// Raw ICMP sockets, where net.ipv4.ping_group_range forbids ping sockets.
    NetRaw,
    /// setns(2) into containers' network namespaces.
    SysAdmin,
}

impl Cap {
    pub const fn number(self) -> u32 {
        match self {
            Cap::DacOverride => 1,
            Cap::NetBindService => 10,
            Cap::NetAdmin => 12,
            Cap::NetRaw => 13,
            Cap::SysAdmin => 21,
        }
    }

    fn mask(caps: &[Cap]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1 << c.number())
    }
}

/// What the sandbox keeps of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub keep: Vec<Keep>,
    /// Kept where held when the sandbox is entered; every other capability is dropped.
    pub keep_caps: Vec<Cap>,
}

impl Sandbox {
    /// slirp4netns's `--enable-sandbox`: /etc and /run read-only (resolv.conf, and its target
    /// under /run with systemd-resolved), CAP_NET_BIND_SERVICE; and CAP_NET_RAW, which our
    /// ICMP echo falls back to where net.ipv4.ping_group_range forbids ping sockets.
    pub fn slirp4netns() -> Self {
        Sandbox { keep: vec![Keep::ro("/etc"), Keep::ro("/run")], keep_caps: vec![Cap::NetBindService, Cap::NetRaw] }
    }

    /// vswitchd's `--sandbox`. Kept: its state directory and its socket's directory
    /// (writable); the directory of the upstream resolv.conf (read-only: a file bound alone
    /// would keep showing the inode that an editor's rename replaced); /etc read-only but
    /// /etc/netns writable (the namespaces' resolv.conf); /run read-only, /var/run/netns
    /// following the namespaces `ip netns add` makes later; /proc read-only (namespaces by
    /// PID, /proc/net for published ports); /dev/net/tun. Capabilities: CAP_NET_ADMIN,
    /// CAP_SYS_ADMIN (setns), CAP_NET_RAW, CAP_NET_BIND_SERVICE, CAP_DAC_OVERRIDE.
    ///
    /// Namespace files elsewhere under /run (Docker's /var/run/docker/netns) are seen when they
    /// exist at start, or when the host's mounts are shared (systemd's default). CAP_SYS_PTRACE
    /// is not kept: it would open every process's /proc/PID/root, the host's root, to the
    /// daemon. So a namespace named by PID (or /proc/PID/ns/net) resolves only for a process
    /// holding no capability the daemon lacks, and a refused port no longer names the process
    /// holding it when that one has more.
    ///
    /// Creates the directories that must exist to be kept: created later, inside, they would
    /// land on the read-only root.
    pub fn vswitchd(state_dir: &Path, socket: &Path, resolv_conf: &Path) -> Result<Self, ConfineError> {
        let abs = |p: &Path| std::path::absolute(p).map_err(sys(format!("resolving {}", p.display())));
        let state = abs(state_dir)?;
        let socket_dir = abs(socket)?.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let resolv_dir = abs(resolv_conf)?.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        for d in [&state, &socket_dir] {
            fs::create_dir_all(d).map_err(sys(format!("creating {}", d.display())))?;
        }
        for d in [ETC_NETNS, RUN_NETNS] {
            // An ordinary user cannot, and has no use for them (namespaces by PID).
            if let Err(e) = fs::create_dir_all(d) {
                log::info!("sandbox: cannot create {d}: {e}");
            }
        }
        let keep = vec![
            Keep::rw(state),
            Keep::rw(socket_dir),
            Keep::ro(resolv_dir),
            Keep::ro("/etc"),
            Keep::rw(ETC_NETNS),
            Keep::ro("/run"),
            Keep::ro(RUN_NETNS).following_mounts(),
            Keep::ro("/proc"),
            Keep::ro("/dev/net/tun"),
        ];
        let keep_caps = vec![Cap::NetAdmin, Cap::SysAdmin, Cap::NetRaw, Cap::NetBindService, Cap::DacOverride];
        Ok(Sandbox { keep, keep_caps })
    }
}

const ETC_NETNS: &str = crate::resolvconf::ETC_NETNS;
const RUN_NETNS: &str = "/var/run/netns";

/// Where the new root is assembled before pivot_root; the tmpfs hides what was there, which
/// is why kept paths are opened before it is mounted.
const STAGE: &str = "/tmp";

/// Enters the sandbox: a mount namespace whose root holds only `sb.keep`, and no capability
/// beyond `sb.keep_caps`; sets no_new_privs. Irreversible. The working directory stays where
/// it was when that lies inside the new root, and becomes / otherwise.
///
/// Must be called while the process has one thread (before any runtime or worker starts):
/// otherwise returns [`ConfineError::Threads`] and changes nothing. When the process has no
/// CAP_SYS_ADMIN and no capability at all (an ordinary user), the mount namespace comes
/// with a user namespace that maps only its own uid and gid.
pub fn enter_sandbox(sb: &Sandbox) -> Result<(), ConfineError> {
    let threads = thread_count().map_err(sys("counting threads in /proc/self/status"))?;
    if threads != 1 {
        return Err(ConfineError::Threads(threads));
    }
    let keeps = plan(&sb.keep)?;
    let cwd = std::env::current_dir().ok();
    for k in keeps.iter().filter(|k| k.follow_mounts) {
        if let Err(e) = share_mount_point(&k.path) {
            // An ordinary user cannot change the host's mounts: what exists now is still kept.
            log::info!("sandbox: mounts made later under {} will not be seen: {e}", k.path.display());
        }
    }
    new_mount_namespace()?;
    // Slave, not private: the host's later mounts under a shared kept path (namespaces that
    // `ip netns add` creates after we start) still reach us, and ours never reach the host.
    mount(None, Path::new("/"), None, libc::MS_SLAVE | libc::MS_REC, None).map_err(sys("making / a slave mount"))?;
    build_root(&keeps)?;
    // Relative paths the caller holds keep working when they lead into kept paths.
    if cwd.is_none_or(|d| std::env::set_current_dir(d).is_err()) {
        std::env::set_current_dir("/").map_err(sys("entering the new root"))?;
    }
    drop_capabilities(Cap::mask(&sb.keep_caps))?;
    log::info!(
        "sandbox: root holds {}; capabilities {:?} kept where held",
        keeps.iter().map(|k| format!("{} ({})", k.path.display(), if k.writable { "rw" } else { "ro" })).collect::<Vec<_>>().join(", "),
        sb.keep_caps
    );
    Ok(())
}

/// The number of threads of this process (entering a sandbox, forking into a namespace and
/// unshare(CLONE_NEWUSER) want one).
pub fn thread_count() -> io::Result<usize> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// A kept path resolved: canonical, merged with duplicates, with the symbolic links on the
/// ways it was spelled (read here, before the stage's tmpfs can hide them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    path: PathBuf,
    writable: bool,
    follow_mounts: bool,
    links: Vec<(PathBuf, PathBuf)>,
}

/// Resolves and merges the kept paths, parents first so that a child's bind lands on top of
/// its parent's and is not hidden by it.
fn plan(keep: &[Keep]) -> Result<Vec<Planned>, ConfineError> {
    let mut out: Vec<Planned> = Vec::new();
    for k in keep {
        if !k.path.is_absolute() {
            return Err(ConfineError::Relative(k.path.clone()));
        }
        let path = match fs::canonicalize(&k.path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("sandbox: {} does not exist; not kept", k.path.display());
                continue;
            }
            Err(e) => return Err(sys(format!("resolving {}", k.path.display()))(e)),
        };
        let link = first_link(&k.path);
        match out.iter_mut().find(|p| p.path == path) {
            Some(p) => {
                p.writable |= k.writable;
                p.follow_mounts |= k.follow_mounts;
                p.links.extend(link);
            }
            None => out.push(Planned { path, writable: k.writable, follow_mounts: k.follow_mounts, links: link.into_iter().collect() }),
        }
    }
    out.sort_by(|a, b| a.path.components().count().cmp(&b.path.components().count()).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// The first symbolic link on the way to `spelling`, with its text: recreated in the new root so
/// the daemon's own spelling (/var/run/netns) still leads to the kept place (/run/netns).
fn first_link(spelling: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut p = PathBuf::new();
    for c in spelling.components() {
        p.push(c);
        if matches!(c, Component::Normal(_)) && fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return fs::read_link(&p).ok().map(|t| (p, t));
        }
    }
    None
}

/// Makes `path` a shared mount point as `ip netns add` does for /run/netns (bind it onto itself
/// first when it is not a mount point), so that mounts under it propagate to our copy.
fn share_mount_point(path: &Path) -> io::Result<()> {
    let shared = libc::MS_SHARED | libc::MS_REC;
    match mount(None, path, None, shared, None) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            mount(None, path, None, shared, None)
        }
        r => r,
    }
}

fn new_mount_namespace() -> Result<(), ConfineError> {
    // SAFETY: unshare takes no pointers; the process is single-threaded (checked by the caller).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(sys("unshare(CLONE_NEWNS)")(e));
    }
    // A user namespace gives CAP_SYS_ADMIN over the new mount namespace, but none left over the
    // host's objects: fine for an ordinary user, who has none, and a silent loss for a process
    // given some capabilities (CAP_NET_ADMIN without CAP_SYS_ADMIN).
    let held = capget()?.effective;
    if held != 0 {
        return Err(ConfineError::WouldLoseCaps(held));
    }
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: as above; a single-threaded process may unshare its user namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return Err(sys("unshare(CLONE_NEWUSER | CLONE_NEWNS)")(io::Error::last_os_error()));
    }
    // setgroups must be denied before an unprivileged process may write gid_map.
    match fs::write("/proc/self/setgroups", "deny") {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(sys("writing /proc/self/setgroups")(e)),
        _ => {}
    }
    fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).map_err(sys("writing /proc/self/uid_map"))?;
    fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).map_err(sys("writing /proc/self/gid_map"))?;
    Ok(())
}

/// A kept path opened in the new mount namespace, ready to be bound.
struct Source {
    plan: Planned,
    fd: OwnedFd,
    dir: bool,
    device: bool,
}

fn build_root(keeps: &[Planned]) -> Result<(), ConfineError> {
    // Opened after unshare: a bind's source must be a mount of the caller's own namespace.
    let mut sources = Vec::with_capacity(keeps.len());
    for k in keeps {
        let fd = open_path(&k.path).map_err(sys(format!("opening {}", k.path.display())))?;
        let md = fstat(&fd).map_err(sys(format!("inspecting {}", k.path.display())))?;
        let kind = md.st_mode & libc::S_IFMT;
        sources.push(Source { plan: k.clone(), fd, dir: kind == libc::S_IFDIR, device: kind == libc::S_IFCHR || kind == libc::S_IFBLK });
    }
    let stage = Path::new(STAGE);
    let fs_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some(Path::new("tmpfs")), stage, Some("tmpfs"), fs_flags, Some("mode=0755,size=1m"))
        .map_err(sys(format!("mounting a tmpfs on {STAGE}")))?;
    for s in &sources {
        let target = staged(&s.plan.path);
        make_mount_point(&target, s.dir).map_err(sys(format!("making the mount point {}", target.display())))?;
        let from = PathBuf::from(format!("/proc/self/fd/{}", s.fd.as_raw_fd()));
        mount(Some(&from), &target, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(sys(format!("binding {} into the new root", s.plan.path.display())))?;
        restrict(&target, s.plan.writable, s.device).map_err(sys(format!("restricting {}", s.plan.path.display())))?;
    }
    let kept: Vec<&Path> = keeps.iter().map(|k| k.path.as_path()).collect();
    for (link, text) in keeps.iter().flat_map(|k| k.links.iter()) {
        let target = staged(link);
        if kept.iter().any(|k| link.starts_with(k)) || fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(sys(format!("making {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(text, &target).map_err(sys(format!("linking {}", link.display())))?;
    }
    mount(None, stage, None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | fs_flags, None)
        .map_err(sys("making the new root read-only"))?;
    std::env::set_current_dir(stage).map_err(sys(format!("entering {STAGE}")))?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it
    // without a directory of its own in the new root (pivot_root(2), NOTES).
    let dot = c".";
    // SAFETY: pivot_root takes two NUL-terminated paths and reads nothing else.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(sys("pivot_root")(io::Error::last_os_error()));
    }
    // SAFETY: umount2 takes a NUL-terminated path.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(sys("detaching the host's root")(io::Error::last_os_error()));
    }
    Ok(())
}

fn staged(path: &Path) -> PathBuf {
    Path::new(STAGE).join(path.strip_prefix("/").unwrap_or(path))
}

fn make_mount_point(target: &Path, dir: bool) -> io::Result<()> {
    // Inside a kept parent the place exists already (the path exists on the host): creating it
    // would write to the host, or fail on a read-only parent.
    if fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if dir {
        return fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::OpenOptions::new().write(true).create_new(true).open(target).map(drop)
}

/// Remounts a bind nosuid, noexec, nodev unless it is a device, and read-only unless writable.
/// Flags the mount has already stay set: in a user namespace, those inherited from the host
/// are locked, and a remount that clears one fails with EPERM.
fn restrict(target: &Path, writable: bool, device: bool) -> io::Result<()> {
    let c = cstring(target)?;
    // SAFETY: statvfs is plain data, valid when zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
    if !device {
        flags |= libc::MS_NODEV;
    }
    if !writable {
        flags |= libc::MS_RDONLY;
    }
    let held = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
    ];
    for (st_flag, ms_flag) in held {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None, target, None, flags, None)
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

fn mount(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
    let src = src.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = fstype.map(|s| CString::new(s).map_err(io::Error::other)).transpose()?;
    let data = data.map(|s| CString::new(s).map_err(io::Error::other)).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call; the
    // kernel reads `data` as a string for tmpfs, the only file system mounted here.
    let r = unsafe { libc::mount(ptr(&src), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_path(p: &Path) -> io::Result<OwnedFd> {
    let c = cstring(p)?;
    // SAFETY: c is NUL-terminated; O_PATH opens without reading and the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, valid when zeroed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (O_PATH fds may be fstat'ed) and st is a valid stat to fill.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// linux/capability.h, version 3: 64 capability bits split over two words.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

#[derive(Debug, Clone, Copy)]
struct CapSets {
    effective: u64,
    permitted: u64,
}

fn capget() -> Result<CapSets, ConfineError> {
    let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr is a v3 header and data holds the two words v3 writes.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) } != 0 {
        return Err(sys("capget")(io::Error::last_os_error()));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    Ok(CapSets { effective: join(data[0].effective, data[1].effective), permitted: join(data[0].permitted, data[1].permitted) })
}

fn prctl(what: &str, op: libc::c_int, arg: libc::c_ulong) -> Result<libc::c_int, ConfineError> {
    // SAFETY: the prctl operations used here take integers only.
    let r = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(sys(what)(io::Error::last_os_error()));
    }
    Ok(r)
}

/// Keeps `want` where held: the bounding and ambient sets are emptied of everything else,
/// the effective and permitted sets hold just that, the inheritable set nothing (no exec
/// follows).
fn drop_capabilities(want: u64) -> Result<(), ConfineError> {
    let keep = want & capget()?.permitted;
    prctl("setting no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    match prctl("clearing the ambient set", libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong) {
        // Before Linux 4.3 there is no ambient set to clear.
        Err(ConfineError::Sys { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {}
        r => {
            r?;
        }
    }
    // The bounding set goes first: dropping from it needs CAP_SETPCAP, which capset removes.
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ takes an integer; EINVAL past the kernel's last capability.
        let inside = unsafe {
            libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
        };
        if inside < 0 {
            break;
        }
        if inside == 1 && keep & 1 << cap == 0 {
            prctl("dropping from the bounding set", libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))?;
        }
    }
    let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: keep as u32, permitted: keep as u32, inheritable: 0 },
        CapData { effective: (keep >> 32) as u32, permitted: (keep >> 32) as u32, inheritable: 0 },
    ];
    // SAFETY: hdr is a v3 header and data the two words v3 reads.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(sys("capset")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Which process a seccomp filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The slirp-compatible engine's process, once it is in place: its TAP open, its API
    /// socket bound. Epoll, timers, sockets of the inet families and AF_UNIX, reading files
    /// (resolv.conf), threads, memory; replacing its API socket (unlink). No setns, no mount,
    /// no netlink, no packet sockets, no writes to the file system beyond that.
    Engine,
    /// vswitchd: the engine's calls, plus setns into network namespaces (CLONE_NEWNET only, on
    /// its short-lived provisioning threads), netlink and packet sockets, and the file writes
    /// of its state directory and /etc/netns (mkdir, rename, unlink, chmod, fsync, flock).
    Daemon,
}

/// Installs the seccomp allow-list of `profile` on every thread of the process, plus the
/// calls in `extra` (numbers as in `libc::SYS_*`) without conditions. Sets no_new_privs.
///
/// Not listed: EPERM (see the module's theory of operation). clone(2) with a namespace flag
/// is refused too, and clone3(2) answers ENOSYS: its flags lie in memory, out of the filter's
/// sight, and ENOSYS sends glibc back to clone(2), whose flags the filter sees.
pub fn enter_seccomp(profile: Profile, extra: &[i64]) -> Result<(), ConfineError> {
    for f in programs(profile, extra)? {
        seccompiler::apply_filter_all_threads(&f)?;
    }
    Ok(())
}

fn target_arch() -> Result<TargetArch, ConfineError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(ConfineError::Arch(other)),
    }
}

/// The filters to install, in order: the one that answers clone3 ENOSYS, then the allow-list,
/// which lists clone3 (the kernel runs both and keeps the stricter answer) and not seccomp(2),
/// so nothing can be installed after it.
fn programs(profile: Profile, extra: &[i64]) -> Result<Vec<BpfProgram>, ConfineError> {
    let arch = target_arch()?;
    let mut out = Vec::with_capacity(2);
    let mut rules = rules(profile, extra)?;
    if !extra.contains(&libc::SYS_clone3) {
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, vec![])]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?;
        out.push(BpfProgram::try_from(clone3)?);
        rules.insert(libc::SYS_clone3, vec![]);
    }
    let allow = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)?;
    out.push(BpfProgram::try_from(allow)?);
    Ok(out)
}

/// A rule that holds when argument `arg` (32 bits) compares as `op` with `value`.
fn when(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, ConfineError> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)?])?)
}

/// clone(2) flags that make new namespaces (CLONE_NEWTIME is clone3-only: in clone(2) that
/// bit is part of the exit signal).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

fn rules(profile: Profile, extra: &[i64]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, ConfineError> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = COMMON.iter().map(|&n| (n, vec![])).collect();
    if profile == Profile::Daemon {
        m.extend(DAEMON.iter().map(|&n| (n, vec![])));
        m.insert(libc::SYS_setns, vec![when(1, SeccompCmpOp::Eq, libc::CLONE_NEWNET as u64)?]);
    }
    m.insert(libc::SYS_clone, vec![when(0, SeccompCmpOp::MaskedEq(CLONE_NAMESPACES), 0)?]);
    let families: &[libc::c_int] = match profile {
        Profile::Engine => &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6],
        Profile::Daemon => &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK, libc::AF_PACKET],
    };
    let by_family = || families.iter().map(|&f| when(0, SeccompCmpOp::Eq, f as u64)).collect::<Result<Vec<_>, _>>();
    m.insert(libc::SYS_socket, by_family()?);
    m.insert(libc::SYS_socketpair, vec![when(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?]);
    // Signals to the process itself only (abort, a helper thread waking the main one).
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    m.insert(libc::SYS_tgkill, vec![when(0, SeccompCmpOp::Eq, pid as u64)?]);
    m.insert(libc::SYS_kill, vec![when(0, SeccompCmpOp::Eq, pid as u64)?]);
    // Reading limits (glibc sizes thread stacks from RLIMIT_STACK), never setting them.
    m.insert(libc::SYS_prlimit64, vec![SeccompRule::new(vec![SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)?])?]);
    for &n in extra {
        m.insert(n, vec![]);
    }
    Ok(m)
}

/// Both profiles: what the engine, the switch's workers, tokio and glibc call while serving.
const COMMON: &[i64] = &[
    // memory
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // threads and their synchronisation
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_prctl,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    // signals
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sigaltstack,
    // time
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // readiness
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_pipe2,
    // spliced published ports: pipes, splice, and the short-lived child that makes sockets
    // inside a container's namespace (clone is allowed without namespace flags, below)
    libc::SYS_splice,
    libc::SYS_wait4,
    // descriptors
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_lseek,
    // reading files (resolv.conf, /proc)
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_unlinkat,
    // sockets (socket and socketpair by family: see `rules`)
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // misc
    libc::SYS_getrandom,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_accept,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
];

/// vswitchd beyond [`COMMON`]: its state directory and /etc/netns (setns, netlink and packet
/// sockets are conditional: see `rules`).
const DAEMON: &[i64] = &[
    libc::SYS_mkdirat,
    libc::SYS_renameat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_flock,
    libc::SYS_ftruncate,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_renameat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_process_with_threads_and_changes_nothing() {
        // A second thread of our own, whatever the harness does, so the call can never succeed
        // and confine the test process.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let before = fs::read_link("/proc/self/ns/mnt").unwrap();
        let r = enter_sandbox(&Sandbox::slirp4netns());
        drop(tx);
        let _ = other.join();
        match r {
            Err(ConfineError::Threads(n)) => assert!(n >= 2, "{n}"),
            other => panic!("expected a thread count error, got {other:?}"),
        }
        assert_eq!(fs::read_link("/proc/self/ns/mnt").unwrap(), before);
    }

    #[test]
    fn plan_merges_duplicates_and_orders_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        let keep = vec![
            Keep::ro(&sub),
            Keep::ro(dir.path()),
            Keep::rw(dir.path().join("a/b/")),
            Keep::ro("/proc").following_mounts(),
            Keep::ro(dir.path().join("missing")),
        ];
        let p = plan(&keep).unwrap();
        let paths: Vec<_> = p.iter().map(|k| k.path.clone()).collect();
        let root = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(paths, vec![PathBuf::from("/proc"), root.clone(), root.join("a/b")]);
        assert!(p[2].writable && !p[1].writable && p[0].follow_mounts && p[1].links.is_empty());
        assert!(matches!(plan(&[Keep::ro("etc")]), Err(ConfineError::Relative(_))));
    }

    #[test]
    fn the_first_link_on_the_way_is_found_with_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("run/netns")).unwrap();
        fs::create_dir(root.join("var")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("var/run")).unwrap();
        assert_eq!(first_link(&root.join("var/run/netns")), Some((root.join("var/run"), PathBuf::from("../run"))));
        assert_eq!(first_link(&root.join("run/netns")), None);
    }

    #[test]
    fn both_profiles_compile_and_conditions_are_where_expected() {
        for profile in [Profile::Engine, Profile::Daemon] {
            let progs = programs(profile, &[]).unwrap();
            assert_eq!(progs.len(), 2);
            let r = rules(profile, &[]).unwrap();
            assert!(!r.contains_key(&libc::SYS_clone3) && !r.contains_key(&libc::SYS_mount) && !r.contains_key(&libc::SYS_unshare));
            assert_eq!(r.contains_key(&libc::SYS_setns), profile == Profile::Daemon);
            assert_eq!(r[&libc::SYS_socket].len(), if profile == Profile::Daemon { 5 } else { 3 });
            // The data path's calls carry no condition, so the kernel caches them as allowed.
            for n in [libc::SYS_read, libc::SYS_write, libc::SYS_sendmmsg, libc::SYS_recvmmsg, libc::SYS_epoll_pwait, libc::SYS_ioctl] {
                assert!(r[&n].is_empty(), "{n} has a condition");
            }
        }
        let extra = rules(Profile::Engine, &[libc::SYS_mount]).unwrap();
        assert!(extra[&libc::SYS_mount].is_empty());
        assert_eq!(programs(Profile::Engine, &[libc::SYS_clone3]).unwrap().len(), 1);
    }

    /// Runs `f` in a forked child, which has one thread (the one that forked), and returns
    /// what it reported. The child only exits: the parent's state is never touched.
    fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child runs only `f` and then _exit; glibc's fork handlers make its
        // allocator usable in the child of a multithreaded parent.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // Descriptors other tests of this process hold open right now are the child's too, a
            // store's flock among them (the lock would outlive its test's drop): only the pipe stays.
            let w = fds[1] as libc::c_uint;
            // SAFETY: close_range takes integers; the child owns its copy of the table.
            unsafe {
                libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, w - 1, 0);
                libc::syscall(libc::SYS_close_range, w + 1, libc::c_uint::MAX, 0);
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err("panicked".into()));
            let msg = r.err().unwrap_or_default();
            // SAFETY: msg is valid for its length; _exit ends the child without running the
            // parent's atexit handlers or destructors.
            unsafe {
                libc::write(fds[1], msg.as_ptr().cast(), msg.len());
                libc::_exit(0);
            }
        }
        // SAFETY: the write end is ours; closing it lets the read below see EOF.
        unsafe { libc::close(fds[1]) };
        // SAFETY: fds[0] is an open pipe end that the File now owns.
        let mut rd = unsafe { fs::File::from_raw_fd(fds[0]) };
        let mut msg = String::new();
        io::Read::read_to_string(&mut rd, &mut msg).unwrap();
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid int to fill.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if msg.is_empty() && libc::WIFEXITED(status) {
            Ok(())
        } else {
            Err(format!("{msg} (wait status {status:#x})"))
        }
    }

    fn status_field(name: &str) -> String {
        let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    }

    fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(what())
        }
    }

    /// True when a mount namespace can be made here: as root, or as a user allowed user
    /// namespaces; otherwise the caller skips loudly.
    fn can_sandbox(test: &str) -> bool {
        let probe = in_child(|| {
            // SAFETY: unshare takes no pointers; the child has one thread.
            let ok =
                unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 || unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } == 0;
            check(ok, || "no mount namespace".into())
        });
        if probe.is_err() {
            eprintln!("SKIPPED {test}: no mount namespace can be made here (not root, user namespaces off)");
        }
        probe.is_ok()
    }

    #[test]
    fn the_sandbox_shows_only_what_it_keeps_and_drops_capabilities() {
        if !can_sandbox("the_sandbox_shows_only_what_it_keeps_and_drops_capabilities") {
            return;
        }
        let rw = tempfile::tempdir().unwrap();
        let ro = tempfile::tempdir().unwrap();
        fs::write(ro.path().join("f"), "kept").unwrap();
        let (rw_path, ro_path) = (fs::canonicalize(rw.path()).unwrap(), fs::canonicalize(ro.path()).unwrap());
        let held_raw = capget().unwrap().permitted & 1 << Cap::NetRaw.number() != 0;
        let r = in_child(|| {
            let sb = Sandbox { keep: vec![Keep::ro("/proc"), Keep::rw(&rw_path), Keep::ro(&ro_path)], keep_caps: vec![Cap::NetRaw] };
            enter_sandbox(&sb).map_err(|e| e.to_string())?;
            let mut top: Vec<String> =
                fs::read_dir("/").map_err(|e| e.to_string())?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            top.sort();
            let mut want: Vec<String> = ["/proc", rw_path.to_str().unwrap(), ro_path.to_str().unwrap()]
                .iter()
                .map(|p| Path::new(p).components().nth(1).unwrap().as_os_str().to_string_lossy().into_owned())
                .collect();
            want.sort();
            want.dedup();
            check(top == want, || format!("/ holds {top:?}, want {want:?}"))?;
            check(!Path::new("/usr").exists() && !Path::new("/etc").exists(), || "host paths visible".into())?;
            fs::write(rw_path.join("new"), "x").map_err(|e| format!("writing the rw path: {e}"))?;
            check(fs::read_to_string(ro_path.join("f")).is_ok_and(|t| t == "kept"), || "ro content".into())?;
            let e = fs::write(ro_path.join("g"), "x").expect_err("the ro path took a write");
            check(e.raw_os_error() == Some(libc::EROFS), || format!("ro write: {e}"))?;
            let e = fs::write("/stray", "x").expect_err("the root took a write");
            check(e.raw_os_error() == Some(libc::EROFS), || format!("root write: {e}"))?;
            // Nothing beyond NET_RAW, and NET_RAW itself where it was held (an ordinary user
            // holds it too: every capability of its new user namespace).
            let raw = 1u64 << Cap::NetRaw.number();
            for f in ["CapEff:", "CapPrm:", "CapBnd:"] {
                let v = u64::from_str_radix(&status_field(f), 16).unwrap_or(u64::MAX);
                check(v & !raw == 0 && (v == raw || !held_raw), || format!("{f} {v:#x} (want at most {raw:#x})"))?;
            }
            check(status_field("CapInh:") == "0".repeat(16) && status_field("CapAmb:") == "0".repeat(16), || "inh/amb".into())?;
            check(status_field("NoNewPrivs:") == "1", || "no_new_privs".into())?;
            // A thread started now is confined as well.
            let t = std::thread::spawn(|| fs::metadata("/usr").is_err()).join().map_err(|_| "thread".to_string())?;
            check(t, || "a new thread sees /usr".into())
        });
        r.unwrap();
        assert!(rw.path().join("new").exists(), "the write did not reach the host");
        assert!(!ro.path().join("g").exists());
    }

    #[test]
    fn a_process_with_capabilities_but_not_sys_admin_is_not_silently_stripped_of_them() {
        let held = capget().unwrap();
        let admin = 1u64 << 21;
        if held.effective & admin == 0 {
            eprintln!("SKIPPED a_process_with_capabilities_but_not_sys_admin_is_not_silently_stripped_of_them: needs CAP_SYS_ADMIN");
            return;
        }
        let r = in_child(|| {
            let keep = held.permitted & !admin;
            let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
            let data = [
                CapData { effective: keep as u32, permitted: keep as u32, inheritable: 0 },
                CapData { effective: (keep >> 32) as u32, permitted: (keep >> 32) as u32, inheritable: 0 },
            ];
            // SAFETY: hdr is a v3 header and data the two words v3 reads.
            check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } == 0, || "capset".into())?;
            match enter_sandbox(&Sandbox::slirp4netns()) {
                Err(ConfineError::WouldLoseCaps(eff)) => check(eff == keep, || format!("reported {eff:#x}")),
                other => Err(format!("expected WouldLoseCaps, got {other:?}")),
            }
        });
        r.unwrap();
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn seccomp_allows_the_list_refuses_the_rest_with_eperm() {
        for profile in [Profile::Engine, Profile::Daemon] {
            let r = in_child(|| {
                enter_seccomp(profile, &[]).map_err(|e| e.to_string())?;
                check(status_field("Seccomp:") == "2" && status_field("NoNewPrivs:") == "1", || "not in filter mode".into())?;
                // SAFETY: null pointers and zeros: refused by the filter, or EFAULT if it lets it by.
                let mount = unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) };
                check(errno_of(mount) == libc::EPERM, || format!("mount: errno {}", errno_of(mount)))?;
                // SAFETY: integers only; refused by the filter (expected) before anything changes.
                let unshare = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
                check(errno_of(unshare) == libc::EPERM, || "unshare allowed".into())?;
                // SAFETY: a null clone_args with size 0 is rejected by the kernel if it gets there.
                let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
                check(errno_of(clone3) == libc::ENOSYS, || format!("clone3: errno {}", errno_of(clone3)))?;
                // SAFETY: integers only; fd -1 makes an allowed setns fail with EBADF.
                let setns_net = unsafe { libc::syscall(libc::SYS_setns, -1, libc::CLONE_NEWNET) };
                let want = if profile == Profile::Daemon { libc::EBADF } else { libc::EPERM };
                check(errno_of(setns_net) == want, || format!("setns(NEWNET): errno {}", errno_of(setns_net)))?;
                // SAFETY: integers only, as above.
                let setns_mnt = unsafe { libc::syscall(libc::SYS_setns, -1, libc::CLONE_NEWNS) };
                check(errno_of(setns_mnt) == libc::EPERM, || "setns(NEWNS) allowed".into())?;
                // SAFETY: plain socket creation; the fds are closed below.
                let (udp, nl) = unsafe {
                    (libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0), libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE))
                };
                check(udp >= 0, || "udp socket refused".into())?;
                check((nl >= 0) == (profile == Profile::Daemon), || format!("netlink socket: {nl}"))?;
                // SAFETY: closing fds we opened (or -1, harmlessly EBADF).
                unsafe {
                    libc::close(udp);
                    libc::close(nl);
                }
                // Signal 0 only checks: allowed to itself, refused to anyone else.
                // SAFETY: kill with signal 0 delivers nothing.
                let (me, init) = unsafe { (libc::kill(libc::getpid(), 0), libc::kill(1, 0)) };
                check(me == 0 && init == -1 && errno_of(-1) == libc::EPERM, || format!("kill: self {me}, init {init}"))?;
                // Threads still start (glibc falls back from clone3 to clone), files still read.
                let t = std::thread::spawn(|| fs::read_to_string("/proc/self/status").is_ok()).join().map_err(|_| "thread".to_string())?;
                check(t, || "a thread could not read a file".into())
            });
            r.unwrap_or_else(|e| panic!("{profile:?}: {e}"));
        }
    }
}

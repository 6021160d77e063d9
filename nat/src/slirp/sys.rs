//! The slirp engine's system calls: its epoll (level-triggered for its wake-up eventfds, edge-triggered for host sockets), sockets made inside another network namespace, pipes and splice(2).
//!
//! `vswitch_switch::sys::Epoll` registers for level-triggered readability only; host TCP
//! sockets also need writability (a connect completing, a full send buffer draining), and
//! level-triggered writability would wake the engine for every idle socket. Edge-triggered
//! readiness is remembered per socket by the caller instead (readable/writable until a call
//! answers EAGAIN). Sockets leave the epoll set when they are closed (the kernel forgets a closed
//! file), so there is no removal. The only `unsafe` of the engine lives here, one kernel call per block
//! (and one allocator tunable, [`map_large_allocations`]).
//! [`ns_sockets`], [`pipe`] and [`splice`] serve spliced published ports (see `splice`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readiness reported for one registered fd.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Event {
    pub(crate) token: u64,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// EPOLLERR or EPOLLHUP: the socket failed or both halves are closed; a read or write says which.
    pub(crate) error: bool,
}

#[derive(Debug)]
pub(crate) struct Poller {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Poller {
    pub(crate) fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is a fresh fd nobody else owns.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event that outlives the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    /// Level-triggered readability (an eventfd: drained by its owner).
    pub(crate) fn add_level(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, token)
    }

    /// Edge-triggered readability and writability (a host socket).
    pub(crate) fn add_edge(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1: forever) and appends what is ready to `out`.
    pub(crate) fn wait(&mut self, timeout_ms: i32, out: &mut Vec<Event>) -> io::Result<()> {
        let cap = self.events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: events points to `cap` writable epoll_event slots that live through the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), cap, timeout_ms) };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for ev in &self.events[..n] {
            // Copies: the struct is packed on x86-64.
            let (flags, token) = (ev.events, ev.u64);
            out.push(Event {
                token,
                readable: flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                writable: flags & libc::EPOLLOUT as u32 != 0,
                error: flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            });
        }
        Ok(())
    }
}

/// How many sockets one trip into a namespace makes.
pub(crate) const NS_BATCH: usize = 16;

/// How many files one trip into a namespace opens ([`ns_open`]).
pub(crate) const NS_PATHS: usize = 2;

/// What the child of [`ns_sockets`] works on: it shares this process's memory and descriptor
/// table, and writes its results here.
#[repr(C)]
struct NsCall {
    user: RawFd,
    net: RawFd,
    domain: libc::c_int,
    /// SOCK_STREAM or SOCK_DGRAM.
    ty: libc::c_int,
    want: usize,
    /// Files to open inside instead of making sockets (when `npaths` > 0).
    paths: [*const libc::c_char; NS_PATHS],
    npaths: usize,
    fds: [RawFd; NS_BATCH],
    made: usize,
    err: libc::c_int,
}

impl NsCall {
    /// A call into `net` (through `user`) with nothing to do yet.
    fn new(user: Option<RawFd>, net: RawFd) -> NsCall {
        NsCall {
            user: user.unwrap_or(-1),
            net,
            domain: 0,
            ty: 0,
            want: 0,
            paths: [std::ptr::null(); NS_PATHS],
            npaths: 0,
            fds: [-1; NS_BATCH],
            made: 0,
            err: 0,
        }
    }
}

fn errno() -> libc::c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Runs in the child of [`ns_sockets`]: no allocation, no lock, system calls only (the child
/// shares the memory of a process whose other threads may hold locks).
extern "C" fn ns_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the NsCall `ns_sockets` passed, alive until this child exits (CLONE_VFORK
    // keeps the calling thread waiting), and nobody else touches it meanwhile.
    let call = unsafe { &mut *arg.cast::<NsCall>() };
    if call.user >= 0 {
        // SAFETY: setns takes an fd and flags, no pointers.
        if unsafe { libc::setns(call.user, libc::CLONE_NEWUSER) } != 0 && errno() != libc::EINVAL {
            // EINVAL: the namespace is ours already.
            call.err = errno();
            return 1;
        }
    }
    // SAFETY: as above.
    if unsafe { libc::setns(call.net, libc::CLONE_NEWNET) } != 0 {
        call.err = errno();
        return 1;
    }
    for &path in &call.paths[..call.npaths.min(NS_PATHS)] {
        // SAFETY: `path` points to a NUL-terminated string that outlives the call (ns_open's
        // arguments, borrowed until this child exits).
        let fd = unsafe { libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            call.err = errno();
            return 1;
        }
        call.fds[call.made] = fd;
        call.made += 1;
    }
    while call.npaths == 0 && call.made < call.want.min(NS_BATCH) {
        let ty = call.ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: socket takes no pointers.
        let fd = unsafe { libc::socket(call.domain, ty, 0) };
        if fd < 0 {
            call.err = errno();
            break;
        }
        call.fds[call.made] = fd;
        call.made += 1;
    }
    0
}

/// Makes up to `want` (at most [`NS_BATCH`]) non-blocking sockets of `domain` and `ty` inside the
/// network namespace `net`, joining the user namespace `user` first when given (an unprivileged
/// process has the rights to join the namespaces of the user namespaces it made, but only a
/// single-threaded one can join a user namespace). A short-lived child sharing this process's
/// memory and descriptor table does it, as pasta does, so the sockets land in this process and
/// no thread of it ever changes namespaces. Returns them; an error only if none could be made.
pub(crate) fn ns_sockets(user: Option<RawFd>, net: RawFd, domain: libc::c_int, ty: libc::c_int, want: usize) -> io::Result<Vec<OwnedFd>> {
    let call = NsCall { domain, ty, want, ..NsCall::new(user, net) };
    in_namespace(call)
}

/// Opens `paths` read-only inside the network namespace `net` (joining `user` first, as
/// [`ns_sockets`] does): files whose contents depend on the namespace of the process opening
/// them, /proc/sys/net's, which keep reading that namespace's values wherever they are read from.
/// An error if any of them could not be opened.
pub(crate) fn ns_open(user: Option<RawFd>, net: RawFd, paths: [&std::ffi::CStr; NS_PATHS]) -> io::Result<Vec<OwnedFd>> {
    let call = NsCall { paths: paths.map(std::ffi::CStr::as_ptr), npaths: NS_PATHS, ..NsCall::new(user, net) };
    in_namespace(call)
}

/// Runs [`ns_child`] on `call` in a short-lived child and takes the descriptors it made.
fn in_namespace(mut call: NsCall) -> io::Result<Vec<OwnedFd>> {
    let mut stack = vec![0u8; 64 << 10];
    // The stack grows down from its end, 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES;
    // SAFETY: `top` is the aligned end of a live 64 KiB buffer the child uses as its stack; the
    // child only makes system calls and writes `call`, which outlives it (CLONE_VFORK returns
    // here only once it exited); no exit signal, so it is reaped with __WCLONE below.
    let pid = unsafe { libc::clone(ns_child, top as *mut libc::c_void, flags, (&mut call as *mut NsCall).cast()) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; pid is our own child.
    while unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) } < 0 && errno() == libc::EINTR {}
    drop(stack);
    let made: Vec<OwnedFd> = call.fds[..call.made]
        .iter()
        // SAFETY: the child made these descriptors in our (shared) table, and nothing else owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    // Sockets: those made are enough. Files: all or nothing.
    if made.is_empty() || (call.npaths > 0 && made.len() < call.npaths) {
        return Err(io::Error::from_raw_os_error(if call.err != 0 { call.err } else { libc::EIO }));
    }
    Ok(made)
}

/// A pipe, non-blocking both ends, grown to `size` bytes when the kernel allows (it may not:
/// /proc/sys/fs/pipe-max-size, or an unprivileged user past pipe-user-pages-soft). Returns the
/// read end, the write end and the capacity it has.
pub(crate) fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just made these two descriptors, owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on our own descriptor, no pointers.
    let cap = match unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) } {
        n if n > 0 => n,
        // SAFETY: as above.
        _ => unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) },
    };
    Ok((r, w, usize::try_from(cap).unwrap_or(4096).max(4096)))
}

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe) without copying them through
/// this process, never waiting. Ok(0): `from` is at its end.
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: null offsets (both are pipes or sockets, read at their current position).
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// IP_BIND_ADDRESS_NO_PORT: a socket bound to an address with port 0 gets its port at connect,
/// chosen for the destination (so ports in TIME-WAIT toward other places do not count).
pub(crate) fn bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `one` is a valid c_int that outlives the call, and `len` is its size.
    cvt(unsafe { libc::setsockopt(fd, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, (&one as *const libc::c_int).cast(), len) })?;
    Ok(())
}

/// Holds glibc's mmap threshold at its initial 128 KiB. glibc raises it, up to 32 MiB, each time
/// a mapped block is freed; after that the engine's TCP buffers (`EngineLimits::tcp_buffer`,
/// megabytes) would come from the heap: zeroed by `calloc` with a `memset` of every byte, and
/// kept by the process after they are freed. Mapped, they are fresh zero pages, resident only
/// where data reached, and unmapped when freed. Process-wide; other threads' large allocations
/// are mapped too, as they are before glibc's first adjustment. It also fixes the trim
/// threshold and overrides a `MALLOC_MMAP_THRESHOLD_` the user set; past glibc's limit of
/// mapped blocks (`M_MMAP_MAX`, 65,536: some 60,000 connections) buffers come from the heap again.
pub(crate) fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tunables; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// A zeroed buffer of `len` bytes whose pages transparent huge pages leave alone: with THP set to
/// `always`, the first byte a connection writes would otherwise fault in (and zero) 2 MiB, and
/// a buffer would be resident in 2 MiB steps rather than as far as data reached. Advice only:
/// where the kernel refuses it, the buffer is as good.
pub(crate) fn small_page_buffer(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    const HUGE: usize = 2 << 20;
    if len >= HUGE {
        let page = 4096;
        let start = (v.as_mut_ptr() as usize + page - 1) & !(page - 1);
        let end = (v.as_mut_ptr() as usize + len) & !(page - 1);
        if end > start {
            // SAFETY: [start, end) lies within `v`'s allocation, page-aligned; MADV_NOHUGEPAGE
            // changes how the kernel backs those pages, not their contents.
            let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_NOHUGEPAGE) };
        }
    }
    v
}

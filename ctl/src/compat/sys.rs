//! Kernel calls of the slirp personalities: fork into a target's namespaces, pass fds back over
//! a Unix socket, and wait for an exit fd to hang up.

use std::ffi::CString;
use std::io;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use vswitch_switch::sys::cvt;

/// Runs `child` in a forked process and returns the fds it sent back, or the error text it
/// reported. The child's work may enter other namespaces: only the fork changes them, never
/// this process. Call it while the process has one thread, so the child inherits no lock held
/// by a thread that does not exist in it.
pub fn in_child(child: impl FnOnce() -> Result<Vec<OwnedFd>, String>) -> Result<Vec<OwnedFd>, String> {
    if crate::confine::thread_count().map_or(true, |n| n != 1) {
        return Err("internal error: the namespace helper must be forked before any thread starts".into());
    }
    let mut pair = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array it is given, which has room for them.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) })
        .map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: both fds were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // SAFETY: the process is single-threaded (checked above), so the child is a full copy that
    // may allocate and run ordinary code; it leaves only through _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        let code = match child() {
            Ok(fds) => send(&theirs, b"ok", &fds).map_or(2, |()| 0),
            Err(msg) => send(&theirs, msg.as_bytes(), &[]).map_or(2, |()| 1),
        };
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // destructors, which belong to the parent.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let got = recv(&ours);
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match got {
        Ok((msg, fds)) if msg == b"ok" => Ok(fds),
        Ok((msg, _)) if !msg.is_empty() => Err(String::from_utf8_lossy(&msg).into_owned()),
        Ok(_) => Err(format!("the namespace helper exited without an answer (wait status {status:#x})")),
        Err(e) => Err(format!("reading the namespace helper's answer: {e}")),
    }
}

/// Room for this many fds in one message (a multiqueue TAP's queues).
const MAX_FDS: usize = 16;

fn send(sock: &OwnedFd, msg: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let fds = &fds[..fds.len().min(MAX_FDS)];
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes, enough for one cmsg carrying every fd;
        // CMSG_FIRSTHDR returns a pointer inside it and CMSG_DATA one past its header.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(c).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: hdr points at live buffers (iov, control) for the duration of the call.
    cvt(unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, 0) as libc::c_int })?;
    Ok(())
}

fn recv(sock: &OwnedFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    // SAFETY: hdr points at live buffers for the call; MSG_CMSG_CLOEXEC keeps the fds from leaking into children.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; the CMSG_* walk stays within msg_controllen, and
    // each SCM_RIGHTS fd is new to this process, so owning it is right.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    Ok((buf, fds))
}

/// Blocks until `fd` reports a hang-up or an error (the slirp4netns exit fd), or forever when
/// poll itself fails.
pub fn wait_hangup(fd: RawFd) {
    let mut p = libc::pollfd { fd, events: libc::POLLHUP, revents: 0 };
    loop {
        // SAFETY: p is one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 {
            std::thread::park();
            continue;
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return;
        }
        // Readable data on the exit pipe is not a hang-up; drain it so poll blocks again.
        let mut b = [0u8; 64];
        // SAFETY: b is a valid buffer of its length.
        if unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) } == 0 {
            return;
        }
    }
}

/// Whether `fd` is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of an inherited fd named on the command line.
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller promises fd is open and unowned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The background half of [`daemonize`]: tells the waiting foreground half to exit 0.
#[derive(Debug)]
pub struct Detached(OwnedFd);

impl Detached {
    /// Everything is serving: the foreground process exits 0 and the caller goes on.
    pub fn ready(self) {
        // SAFETY: writes one byte from a valid buffer to the pipe we own.
        unsafe { libc::write(self.0.as_raw_fd(), b"1".as_ptr().cast(), 1) };
    }
}

/// Forks into the background. The foreground process waits until the background one calls
/// [`Detached::ready`] and exits 0, or exits 1 if it ends first (its error already printed on
/// the shared stderr), so callers that wait for the exit know the namespace is served. Returns
/// in the background process, in a session of its own. Call while single-threaded.
pub fn daemonize() -> io::Result<Detached> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array, which has room for them.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded (the caller's promise); the parent leaves through _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(w);
        let mut b = [0u8; 1];
        // SAFETY: reads into a valid one-byte buffer; EOF (0) means the child ended unready.
        let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        // SAFETY: ends the foreground process without running the background one's destructors.
        unsafe { libc::_exit(if n == 1 { 0 } else { 1 }) };
    }
    drop(r);
    // SAFETY: setsid takes nothing; failure (already a group leader) is harmless.
    unsafe { libc::setsid() };
    Ok(Detached(w))
}

/// Points stdin, stdout and stderr at /dev/null (a daemon's output has nowhere to go).
pub fn silence_stdio() {
    let Ok(null) = CString::new("/dev/null") else { return };
    // SAFETY: null is a valid C string; the fd is closed below unless it is one of 0..2.
    let fd = unsafe { libc::open(null.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        return;
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which we own.
        unsafe { libc::dup2(fd, target) };
    }
    if fd > 2 {
        // SAFETY: fd was opened above and is owned here.
        unsafe { libc::close(fd) };
    }
}

/// Blocks the termination signals in this thread and every thread it starts later, so that
/// [`wait_signal`] alone receives them. Call before starting threads.
pub fn block_signals() {
    // SAFETY: an all-zero sigset_t is a valid argument for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the calls only edit it and the thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM, SIGINT or SIGHUP (blocked by [`block_signals`]) and returns it.
pub fn wait_signal() -> libc::c_int {
    // SAFETY: as in block_signals.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut sig = 0;
    // SAFETY: set and sig are valid for the calls; sigwait only writes sig.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        while libc::sigwait(&set, &mut sig) != 0 {}
    }
    sig
}

/// Sends `sig` to this process (a helper thread ends the main one's [`wait_signal`]).
pub fn raise_process(sig: libc::c_int) {
    // SAFETY: kill with our own pid and a valid signal number.
    unsafe { libc::kill(libc::getpid(), sig) };
}

/// The addresses of interface `name` in this namespace, with their prefix lengths.
pub fn interface_addrs(name: &str) -> io::Result<Vec<(std::net::IpAddr, u8)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list and stores its head in `head`.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    // SAFETY: the list is walked through ifa_next until null and freed once; every pointer in
    // it is valid until freeifaddrs, and each sockaddr is read as the type its family says.
    unsafe {
        while !cur.is_null() {
            let ifa = &*cur;
            let matches = !ifa.ifa_name.is_null() && std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes();
            if matches && !ifa.ifa_addr.is_null() {
                let mask = ifa.ifa_netmask;
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        let bits = if mask.is_null() { 32 } else { (*mask.cast::<libc::sockaddr_in>()).sin_addr.s_addr.count_ones() as u8 };
                        out.push((std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))), bits));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        let bits = if mask.is_null() {
                            128
                        } else {
                            (*mask.cast::<libc::sockaddr_in6>()).sin6_addr.s6_addr.iter().map(|b| b.count_ones() as u8).sum()
                        };
                        out.push((std::net::IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)), bits));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

/// Raises this process's descriptor limit as far as it may go (`-t all` holds a socket per
/// port and family): to the kernel's ceiling (fs.nr_open) where privileged, else to the hard
/// limit. Returns the soft limit in force afterwards.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`, a valid struct on the stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse::<u64>().ok());
    for max in ceiling.into_iter().filter(|&c| c > lim.rlim_max).chain([lim.rlim_max]) {
        let want = libc::rlimit { rlim_cur: max, rlim_max: max };
        // SAFETY: setrlimit reads one valid rlimit; failing (EPERM for the ceiling) changes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return max;
        }
    }
    lim.rlim_cur
}

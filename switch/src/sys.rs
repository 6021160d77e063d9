//! Thin, audited wrappers over the kernel calls the data plane makes (epoll, eventfd, read/write, setns, affinity).
//!
//! Every `unsafe` block of the crate outside `port/tap.rs` and `port/afpacket.rs` lives here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Turns a libc return value into `io::Result`, reading errno on -1.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Reads once from a non-blocking fd into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes for the duration of the call.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// Writes one whole frame to a fd (TAP and packet sockets take a frame per call).
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable region of buf.len() bytes for the duration of the call.
    cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// Sets O_NONBLOCK on a fd.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take no pointers; an invalid fd yields EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// An epoll instance owned by one worker; other threads may add and remove fds on it.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// Readiness reported for one registered fd.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: u64,
    pub readable: bool,
    pub error: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the result is a fresh fd we own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Registers `fd` for level-triggered readability, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: ev is a valid epoll_event that outlives the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: ev is valid (ignored by DEL on modern kernels, required non-null on old ones).
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` and fills `out` with ready fds; returns how many.
    pub fn wait(&self, events: &mut [libc::epoll_event], out: &mut [Ready], timeout_ms: i32) -> io::Result<usize> {
        let cap = events.len().min(out.len()) as libc::c_int;
        // SAFETY: events points to `cap` writable epoll_event slots.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), cap, timeout_ms) };
        let n = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        for (ev, r) in events[..n].iter().zip(out.iter_mut()) {
            let flags = ev.events;
            *r = Ready {
                token: ev.u64,
                readable: flags & libc::EPOLLIN as u32 != 0,
                error: flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            };
        }
        Ok(n)
    }
}

/// A non-blocking eventfd used to wake a worker or signal a memory port.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is a fresh fd we own.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn notify(&self) {
        // A full counter (EAGAIN) still leaves the fd readable, which is all a waker needs.
        let _ = write(self.raw(), &1u64.to_ne_bytes());
    }

    /// Clears the counter so level-triggered epoll stops reporting it.
    pub fn drain(&self) {
        let mut b = [0u8; 8];
        let _ = read(self.raw(), &mut b);
    }
}

/// Pins the calling thread to one CPU; errors are returned so the caller can log them once.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set` for cpu < CPU_SETSIZE, which the modulo guarantees.
    unsafe { libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size we pass.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is its empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid, writable cpu_set_t of the size we pass.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET only reads inside `set` for indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Enters the namespace `f` names, of type `nstype` (the calling thread; the whole process
/// when it has one thread, as a user namespace requires).
pub fn setns(f: &File, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: f is an open namespace fd; setns takes no pointers.
    cvt(unsafe { libc::setns(f.as_raw_fd(), nstype) })?;
    Ok(())
}

/// Switches the calling thread into the network namespace at `path` (a netns file).
fn setns_net(path: &Path) -> io::Result<()> {
    setns(&File::open(path)?, libc::CLONE_NEWNET)
}

/// Runs `f` on a fresh thread that has entered the network namespace at `netns`.
///
/// A thread of its own, because setns changes only the calling thread and we must never
/// leave one of the daemon's threads in a container's namespace.
pub fn in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = netns.to_path_buf();
    std::thread::Builder::new()
        .name("vswitch-netns".into())
        .spawn(move || {
            // The thread must not share fs attributes for setns(CLONE_NEWNET)? It need not: only
            // CLONE_NEWNS/USERNS require that, so a plain thread may enter a network namespace.
            setns_net(&path)?;
            f()
        })
        .map_err(io::Error::other)?
        .join()
        .map_err(|_| io::Error::other("namespace worker thread panicked"))?
}

/// Names an interface index in the current namespace.
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL byte"))?;
    // SAFETY: c is a valid NUL-terminated string for the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// Copies an interface name into an `ifreq`-style name field, checking IFNAMSIZ.
pub(crate) fn ifname_bytes(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is not valid: 1-15 characters, no '/', space or NUL"),
        ));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

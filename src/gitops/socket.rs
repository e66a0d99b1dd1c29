//! libgit2's plain TCP stream, replaced by one that sets `TCP_NODELAY`.
//!
//! libgit2 writes a smart-HTTP request in pieces (headers, then the body in chunks) on a socket
//! left with Nagle's algorithm on, so each small write after the first waits for the server's
//! delayed ACK (~40 ms on Linux). A push paid that inside its receive-pack POST, ~80 ms at the
//! server against the git CLI's ~45 ms, which kept tagflow's window from fetch to ref update
//! longer than the gap between two pushes of a writer pushing flat out (tests/race_writer.rs).
//! libgit2 has no option for it, but lets a program register the stream it opens sockets with
//! (`git_stream_register`, `GIT_STREAM_STANDARD`); TLS (OpenSSL over this stream) and SSH
//! (libssh2 on its socket) use it too.
//!
//! The stream keeps the layout of libgit2's own socket stream (`git_socket_stream`: the
//! `git_stream` header, host, port, then the socket), because the SSH transport reads the socket
//! from there. Like libgit2's it keeps TCP keepalive, honours the connect timeout and, unlike
//! libgit2's with both timeouts set, also the read/write timeout.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// libgit2's `GIT_STREAM_VERSION`.
const STREAM_VERSION: c_int = 1;
/// libgit2's `GIT_STREAM_STANDARD`.
const STREAM_STANDARD: c_int = 1;

/// Milliseconds to connect (0: no limit), set with libgit2's own by `gitops::init_timeouts`.
static CONNECT_MS: AtomicI32 = AtomicI32::new(0);
/// Milliseconds a read or write may wait (0: no limit).
static IO_MS: AtomicI32 = AtomicI32::new(0);

/// libgit2's `git_stream` (include/git2/sys/stream.h, libgit2 1.9).
#[repr(C)]
struct GitStream {
    version: c_int,
    /// `encrypted : 1, proxy_support : 1`: both 0.
    flags: c_uint,
    timeout: c_int,
    connect_timeout: c_int,
    connect: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    certificate: Option<unsafe extern "C" fn(*mut *mut c_void, *mut GitStream) -> c_int>,
    set_proxy: Option<unsafe extern "C" fn(*mut GitStream, *const c_void) -> c_int>,
    read: Option<unsafe extern "C" fn(*mut GitStream, *mut c_void, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut GitStream, *const c_char, usize, c_int) -> isize>,
    close: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    free: Option<unsafe extern "C" fn(*mut GitStream)>,
}

/// libgit2's `git_socket_stream` (src/libgit2/streams/socket.h): what the SSH transport casts
/// a standard stream to, to hand `s` to libssh2.
#[repr(C)]
struct SocketStream {
    parent: GitStream,
    host: *mut c_char,
    port: *mut c_char,
    s: c_int,
}

/// libgit2's `git_stream_registration`.
#[repr(C)]
struct Registration {
    version: c_int,
    init: Option<unsafe extern "C" fn(*mut *mut GitStream, *const c_char, *const c_char) -> c_int>,
    wrap: Option<unsafe extern "C" fn(*mut *mut GitStream, *mut GitStream, *const c_char) -> c_int>,
}

// libgit2 (built into libgit2-sys) exports it; libgit2-sys declares no binding for it.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// The timeouts the stream applies, in step with libgit2's (`gitops::init_timeouts`).
pub(super) fn set_timeouts(connect: Duration, io: Duration) {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    CONNECT_MS.store(ms(connect), Ordering::Relaxed);
    IO_MS.store(ms(io), Ordering::Relaxed);
}

/// Make libgit2 open every socket with this stream. Call once, before any transfer.
#[allow(unsafe_code)]
pub(super) fn register() -> Result<(), String> {
    let mut registration = Registration {
        version: STREAM_VERSION,
        init: Some(init),
        wrap: None,
    };
    // SAFETY: libgit2 copies the registration under its own lock; `init` and the stream's
    // functions below follow libgit2's stream contract. Called before any transfer starts.
    let rc = unsafe { git_stream_register(STREAM_STANDARD, &raw mut registration) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("git_stream_register failed ({rc})"))
    }
}

/// Record `message` as libgit2's last error, of class `class`.
#[allow(unsafe_code)]
fn set_error(class: libgit2_sys::git_error_t, message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid NUL-terminated string; libgit2 copies it into its thread-local error.
    unsafe {
        libgit2_sys::git_error_set_str(class as c_int, text.as_ptr());
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn init(
    out: *mut *mut GitStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    if out.is_null() || host.is_null() {
        set_error(libgit2_sys::GIT_ERROR_INVALID, "no host to connect to");
        return -1;
    }
    // SAFETY: libgit2 passes NUL-terminated strings that live for this call; copied here.
    let (host, port) = unsafe {
        (
            CStr::from_ptr(host).to_owned(),
            (!port.is_null()).then(|| CStr::from_ptr(port).to_owned()),
        )
    };
    let stream = Box::new(SocketStream {
        parent: GitStream {
            version: STREAM_VERSION,
            flags: 0,
            timeout: IO_MS.load(Ordering::Relaxed),
            connect_timeout: CONNECT_MS.load(Ordering::Relaxed),
            connect: Some(connect),
            certificate: None,
            set_proxy: None,
            read: Some(read),
            write: Some(write),
            close: Some(close),
            free: Some(free),
        },
        host: host.into_raw(),
        port: port.map_or(std::ptr::null_mut(), CString::into_raw),
        s: -1,
    });
    // SAFETY: `out` is non-null and libgit2's to write; the stream is freed through `free`.
    unsafe { *out = Box::into_raw(stream).cast::<GitStream>() };
    0
}

/// The stream behind libgit2's pointer (the `git_stream` is its first field).
///
/// # Safety
/// `stream` must come from [`init`] and not be freed.
#[allow(unsafe_code)]
unsafe fn this<'a>(stream: *mut GitStream) -> &'a mut SocketStream {
    // SAFETY: per the contract, `stream` points at a live `SocketStream` made by `init`.
    unsafe { &mut *stream.cast::<SocketStream>() }
}

#[allow(unsafe_code)]
unsafe extern "C" fn connect(stream: *mut GitStream) -> c_int {
    // SAFETY: libgit2 calls this with the stream `init` made.
    let st = unsafe { this(stream) };
    // SAFETY: `host` and `port` were made by `init` from CStrings and are not freed yet.
    let host = unsafe { CStr::from_ptr(st.host) }
        .to_string_lossy()
        .into_owned();
    let port = if st.port.is_null() {
        None
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(st.port) }
            .to_str()
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
    };
    let Some(port) = port else {
        set_error(
            libgit2_sys::GIT_ERROR_NET,
            &format!("failed to connect to {host}: no valid port"),
        );
        return -1;
    };
    let addrs = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a,
        Err(e) => {
            set_error(
                libgit2_sys::GIT_ERROR_NET,
                &format!("failed to resolve address for {host}: {e}"),
            );
            return -1;
        }
    };
    let limit = u64::try_from(st.parent.connect_timeout)
        .ok()
        .filter(|&ms| ms > 0);
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        let attempt = match limit {
            Some(ms) => TcpStream::connect_timeout(&addr, Duration::from_millis(ms)),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            // As libgit2 does: a timeout ends the attempt, a refusal tries the next address.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                set_error(
                    libgit2_sys::GIT_ERROR_NET,
                    &format!("failed to connect to {host}: Operation timed out"),
                );
                return -1;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(tcp) = tcp else {
        let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        set_error(
            libgit2_sys::GIT_ERROR_OS,
            &format!("failed to connect to {host}: {why}"),
        );
        return -1;
    };
    // Small writes leave at once (the point of this stream); a dead peer is noticed as
    // libgit2's own socket would (idle 60 s, then 3 probes 10 s apart).
    let _ = tcp.set_nodelay(true);
    keepalive(&tcp);
    st.s = tcp.into_raw_fd();
    0
}

#[allow(unsafe_code)]
fn keepalive(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    let on: c_int = 1;
    let set = |level: c_int, name: c_int, value: c_int| {
        // SAFETY: a valid socket and a pointer to a c_int of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const value).cast::<c_void>(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, on) == 0 {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }
}

/// Wait until the socket is ready for `events`, at most the stream's timeout: `Ok(false)` when
/// it timed out.
#[allow(unsafe_code)]
fn ready(st: &SocketStream, events: libc::c_short) -> std::io::Result<bool> {
    if st.parent.timeout <= 0 {
        return Ok(true);
    }
    let mut fd = libc::pollfd {
        fd: st.s,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&raw mut fd, 1, st.parent.timeout) };
        match n {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// libgit2's `GIT_TIMEOUT`.
const TIMEOUT: isize = -37;

/// One read or write: wait until the socket is ready (at most the stream's timeout), then run
/// `op` until it is not interrupted. `what` says which in errors ("read from", "write to").
fn transfer(
    st: &SocketStream,
    events: libc::c_short,
    what: &str,
    mut op: impl FnMut() -> isize,
) -> isize {
    match ready(st, events) {
        Ok(true) => {}
        Ok(false) => {
            set_error(
                libgit2_sys::GIT_ERROR_NET,
                &format!("could not {what} socket: timed out"),
            );
            return TIMEOUT;
        }
        Err(e) => {
            set_error(
                libgit2_sys::GIT_ERROR_NET,
                &format!("could not {what} socket: {e}"),
            );
            return -1;
        }
    }
    loop {
        let n = op();
        if n >= 0 {
            return n;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            set_error(
                libgit2_sys::GIT_ERROR_NET,
                &format!("could not {what} socket: {e}"),
            );
            return -1;
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn read(stream: *mut GitStream, data: *mut c_void, len: usize) -> isize {
    // SAFETY: libgit2 calls this with the stream `init` made.
    let st = unsafe { this(stream) };
    let fd = st.s;
    // SAFETY: libgit2 gives a buffer of `len` writable bytes.
    transfer(st, libc::POLLIN, "read from", || unsafe {
        libc::recv(fd, data, len, 0)
    })
}

#[allow(unsafe_code)]
unsafe extern "C" fn write(
    stream: *mut GitStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: libgit2 calls this with the stream `init` made.
    let st = unsafe { this(stream) };
    let fd = st.s;
    // SAFETY: libgit2 gives `len` readable bytes; MSG_NOSIGNAL: a closed peer is an error, not
    // a SIGPIPE.
    transfer(st, libc::POLLOUT, "write to", || unsafe {
        libc::send(fd, data.cast::<c_void>(), len, libc::MSG_NOSIGNAL)
    })
}

#[allow(unsafe_code)]
unsafe extern "C" fn close(stream: *mut GitStream) -> c_int {
    // SAFETY: libgit2 calls this with the stream `init` made.
    let st = unsafe { this(stream) };
    if st.s < 0 {
        return 0;
    }
    // SAFETY: `s` is the socket `connect` opened and nothing else closes it.
    let rc = unsafe { libc::close(st.s) };
    st.s = -1;
    if rc == 0 {
        0
    } else {
        set_error(libgit2_sys::GIT_ERROR_OS, "failed to close socket");
        -1
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn free(stream: *mut GitStream) {
    if stream.is_null() {
        return;
    }
    // SAFETY: made by `init` with `Box::into_raw`; libgit2 frees a stream once, after `close`.
    let st = unsafe { Box::from_raw(stream.cast::<SocketStream>()) };
    if st.s >= 0 {
        // SAFETY: a socket `connect` opened that was not closed.
        unsafe { libc::close(st.s) };
    }
    for p in [st.host, st.port] {
        if !p.is_null() {
            // SAFETY: made by `CString::into_raw` in `init`, freed only here.
            drop(unsafe { CString::from_raw(p) });
        }
    }
}

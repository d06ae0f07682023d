//! Servers and clients for the integration tests.
//!
//! `scenario --listen ADDR ...`: a server and its clients in one process: `--connections`
//! clients that each connect, wait for the server to close, and go, and a server that accepts
//! each pending connection `--accept-delay-ms` after it entered the accept queue. Exits 0 only
//! when every connection was made and accepted. `--fastopen 1`: the listener takes TCP Fast
//! Open and each client sends a byte in its SYN (the namespace's `net.ipv4.tcp_fastopen` must
//! allow it). `--io-uring 1`: the server accepts through io_uring instead of accept(2).
//!
//! `scenario serve --listen ADDR --backlog N --accept-after-ms T --duration-ms D`: a server
//! alone, that accepts nothing for T ms (its queues fill), then accepts whatever comes, and
//! closes after D ms. `--fastopen 1`: the listener takes TCP Fast Open.
//!
//! `scenario request --listen ADDR --connections N --request-delay-ms R --handler-ms H`: a
//! server and its clients, one connection at a time: the server accepts at once, reads the
//! request, works H ms and answers; each client sends its request R ms after connecting and
//! waits for the answer. Exits 0 only when every connection got its answer.
//!
//! `scenario reuseport --listen ADDR --backlog B --connections N --hold-ms H`: two
//! SO_REUSEPORT listeners on one address and port, of which only the first (backlog 1024) is
//! ever accepted from and the second has backlog B; N concurrent clients (the kernel spreads them over both by hash) hold their
//! connections H ms. The second member's queue fills and drops while the first has room.
//!
//! `scenario listeners --first-port P --count N --busy K`: N listeners on 127.0.0.1, ports P
//! to P+N-1, each connected to and accepted once, the first K times; then all closed.
//!
//! `scenario pool --listen ADDR --acceptors N --connections M`: a worker pool: N threads that
//! each block in accept(2) on one listener, and M clients one after another, each waiting for
//! the server's close. Exits 0 when all M were accepted; prints how many threads accepted.
//!
//! `scenario handlers --listen ADDR --connections N`: N clients connected at once, each handed on
//! accept to a thread of its own that blocks in read(2) until the request comes; the clients
//! send their requests only once all N handlers sleep in read, then wait for the answers.
//! Exits 0 when all N were answered.
//!
//! `scenario connect --to ADDR --connections N --hold-ms H --timeout-ms X`: N concurrent
//! clients that connect (giving up after X ms) and hold the connection for H ms. Some may fail
//! by design (a full queue): it prints how many connected and exits 0. `--fastopen 1`: each
//! client sends a byte in its SYN. `--reset 1`: each client closes with a reset (SO_LINGER 0)
//! instead of a FIN, which ends the connection with one packet, never retransmitted.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

struct Options {
    listen: SocketAddr,
    connect: SocketAddr,
    connections: usize,
    concurrency: usize,
    accept_delay: Duration,
    fastopen: bool,
    io_uring: bool,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut listen = None;
    let mut connect = None;
    let mut connections = 10;
    let mut concurrency = 1;
    let mut accept_delay_ms = 0;
    let mut fastopen = 0;
    let mut io_uring = 0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--connect" => connect = Some(value.parse()?),
            "--connections" => connections = value.parse()?,
            "--concurrency" => concurrency = value.parse()?,
            "--accept-delay-ms" => accept_delay_ms = value.parse()?,
            "--fastopen" => fastopen = value.parse::<u8>()?,
            "--io-uring" => io_uring = value.parse::<u8>()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let listen: SocketAddr = listen.context("--listen ADDR:PORT is required")?;
    Ok(Options {
        listen,
        connect: connect.unwrap_or(listen),
        connections,
        concurrency: concurrency.max(1),
        accept_delay: Duration::from_millis(accept_delay_ms),
        fastopen: fastopen != 0,
        io_uring: io_uring != 0,
    })
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve_alone(&flags(2)?),
        Some("connect") => connect_alone(&flags(2)?),
        Some("request") => request_response(&flags(2)?),
        Some("reuseport") => reuseport(&flags(2)?),
        Some("listeners") => many_listeners(&flags(2)?),
        Some("pool") => worker_pool(&flags(2)?),
        Some("handlers") => blocked_handlers(&flags(2)?),
        _ => together(),
    }
}

/// `--name value` pairs from argv[skip..].
fn flags(skip: usize) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let args: Vec<String> = std::env::args().skip(skip).collect();
    if !args.len().is_multiple_of(2) {
        bail!("flags come in --name value pairs");
    }
    Ok(args
        .chunks(2)
        .map(|pair| (pair[0].trim_start_matches("--").to_owned(), pair[1].clone()))
        .collect())
}

fn flag<T: std::str::FromStr>(
    flags: &std::collections::HashMap<String, String>,
    name: &str,
    default: Option<T>,
) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match (flags.get(name), default) {
        (Some(value), _) => value
            .parse()
            .map_err(|e| anyhow::anyhow!("--{name} {value}: {e}")),
        (None, Some(default)) => Ok(default),
        (None, None) => bail!("--{name} is required"),
    }
}

fn listener(addr: SocketAddr, backlog: i32) -> anyhow::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // [::] also takes IPv4 clients (v4-mapped), as most servers configure it.
        socket.set_only_v6(false)?;
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn serve_alone(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let listener = listener(addr, flag(flags, "backlog", Some(128))?)?;
    if flag::<u8>(flags, "fastopen", Some(0))? != 0 {
        enable_fastopen(&listener)?;
    }
    let accept_after = Duration::from_millis(flag(flags, "accept-after-ms", Some(0))?);
    let deadline =
        std::time::Instant::now() + Duration::from_millis(flag(flags, "duration-ms", None)?);
    thread::sleep(accept_after.min(deadline.saturating_duration_since(std::time::Instant::now())));
    listener.set_nonblocking(true)?;
    let mut accepted = 0;
    let mut held = Vec::new();
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                held.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("scenario: {accepted} connections accepted on {addr}");
    Ok(())
}

fn request_response(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let listener = listener(addr, 128)?;
    let connections: usize = flag(flags, "connections", None)?;
    let request_delay = Duration::from_millis(flag(flags, "request-delay-ms", Some(0))?);
    let handler = Duration::from_millis(flag(flags, "handler-ms", Some(0))?);
    for _ in 0..connections {
        let client = thread::spawn(move || -> anyhow::Result<()> {
            let mut stream = TcpStream::connect(addr)?;
            thread::sleep(request_delay);
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut answer = [0u8; 64];
            let read = stream.read(&mut answer)?;
            if read == 0 {
                bail!("no answer");
            }
            Ok(())
        });
        let (mut stream, _) = listener.accept()?;
        let mut request = [0u8; 64];
        if stream.read(&mut request)? == 0 {
            bail!("a client closed without its request");
        }
        thread::sleep(handler);
        stream.write_all(b"HTTP/1.0 204 No Content\r\n\r\n")?;
        drop(stream);
        client
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    println!("scenario: {connections} requests answered on {addr}");
    Ok(())
}

fn reuseport(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let backlog: i32 = flag(flags, "backlog", None)?;
    let connections: usize = flag(flags, "connections", None)?;
    let hold = Duration::from_millis(flag(flags, "hold-ms", Some(1000))?);
    let member = |backlog: i32| -> anyhow::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("bind {addr}"))?;
        socket.listen(backlog)?;
        Ok(socket.into())
    };
    // The served member has room for every client; the neglected one holds `backlog`.
    let (served, _neglected) = (member(1024)?, member(backlog)?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = served.accept() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
                thread::sleep(hold);
                Some(stream)
            })
        })
        .collect();
    let connected = clients
        .into_iter()
        .map(|c| c.join())
        .filter(|joined| matches!(joined, Ok(Some(_))))
        .count();
    println!(
        "scenario: {connected} of {connections} connected, {} accepted by the first member",
        accepted.load(Ordering::SeqCst)
    );
    Ok(())
}

fn many_listeners(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let first_port: u16 = flag(flags, "first-port", None)?;
    let count: u16 = flag(flags, "count", None)?;
    let busy: usize = flag(flags, "busy", Some(1))?;
    let listeners = (0..count)
        .map(|i| listener(SocketAddr::from(([127, 0, 0, 1], first_port + i)), 128))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (i, listener) in listeners.iter().enumerate() {
        let connections = if i == 0 { busy } else { 1 };
        for _ in 0..connections {
            let client = TcpStream::connect(listener.local_addr()?)?;
            let (accepted, _) = listener.accept()?;
            drop((client, accepted));
        }
    }
    Ok(())
}

fn worker_pool(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    use std::collections::BTreeSet;
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let acceptors: usize = flag(flags, "acceptors", None)?;
    let connections: usize = flag(flags, "connections", None)?;
    let listener = Arc::new(listener(addr, 128)?);
    let accepted_by = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    for _ in 0..acceptors {
        let (listener, accepted_by) = (listener.clone(), accepted_by.clone());
        thread::spawn(move || {
            // SAFETY: gettid takes no argument and cannot fail.
            let tid = unsafe { libc::gettid() };
            while let Ok((stream, _)) = listener.accept() {
                accepted_by.lock().map(|mut t| t.insert(tid)).ok();
                drop(stream);
            }
        });
    }
    // Every worker blocked in accept() before the first client.
    wait_for_threads_blocked(acceptors)?;
    for _ in 0..connections {
        let mut stream = TcpStream::connect(addr)?;
        // The server's close (a read of 0 bytes): the connection was accepted.
        let mut byte = [0u8; 1];
        if stream.read(&mut byte)? != 0 {
            bail!("the server sent data instead of closing");
        }
    }
    let threads = accepted_by.lock().map(|t| t.len()).unwrap_or(0);
    println!("scenario: {connections} accepted by {threads} threads of {acceptors}");
    // The workers stay blocked in accept(): exit without waiting for them.
    std::process::exit(0)
}

fn blocked_handlers(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let addr: SocketAddr = flag(flags, "listen", None)?;
    let connections: usize = flag(flags, "connections", None)?;
    let listener = listener(addr, 1024)?;
    let mut clients = Vec::with_capacity(connections);
    let mut handlers = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(TcpStream::connect(addr)?);
        let (mut stream, _) = listener.accept()?;
        handlers.push(thread::spawn(move || -> anyhow::Result<()> {
            let mut request = [0u8; 64];
            if stream.read(&mut request)? == 0 {
                bail!("a client closed without its request");
            }
            stream.write_all(b"HTTP/1.0 204 No Content\r\n\r\n")?;
            Ok(())
        }));
    }
    // Every handler asleep in read() before the first request.
    wait_for_threads_blocked(connections)?;
    for client in &mut clients {
        client.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut answer = [0u8; 64];
        if client.read(&mut answer)? == 0 {
            bail!("no answer");
        }
    }
    for handler in handlers {
        handler
            .join()
            .map_err(|_| anyhow::anyhow!("handler panicked"))??;
    }
    println!("scenario: {connections} requests answered by as many handlers on {addr}");
    Ok(())
}

/// Waits until `count` threads of this process sleep (state S in /proc), as threads blocked in
/// accept() or read() do; gives up after 10 s.
fn wait_for_threads_blocked(count: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sleeping = std::fs::read_dir("/proc/self/task")?
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // The state follows the name, which is in parentheses.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('S'))
            })
            .count();
        if sleeping >= count {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{sleeping} of {count} threads blocked after 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn connect_alone(flags: &std::collections::HashMap<String, String>) -> anyhow::Result<()> {
    let target: SocketAddr = flag(flags, "to", None)?;
    let connections: usize = flag(flags, "connections", None)?;
    let hold = Duration::from_millis(flag(flags, "hold-ms", Some(0))?);
    let timeout = Duration::from_millis(flag(flags, "timeout-ms", Some(3000))?);
    let fastopen = flag::<u8>(flags, "fastopen", Some(0))? != 0;
    let reset = flag::<u8>(flags, "reset", Some(0))? != 0;
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            thread::spawn(move || {
                let stream = if fastopen {
                    connect_fastopen(target).ok()?
                } else {
                    TcpStream::connect_timeout(&target, timeout).ok()?
                };
                if reset {
                    socket2::SockRef::from(&stream)
                        .set_linger(Some(Duration::ZERO))
                        .ok()?;
                }
                thread::sleep(hold);
                Some(stream)
            })
        })
        .collect();
    let connected = clients
        .into_iter()
        .map(|c| c.join())
        .filter(|joined| matches!(joined, Ok(Some(_))))
        .count();
    println!("scenario: {connected} of {connections} connected to {target}");
    Ok(())
}

fn together() -> anyhow::Result<()> {
    let options = parse_options()?;
    // Large enough that no test connection is ever dropped.
    let listener = listener(options.listen, 4096)?;
    if options.fastopen {
        enable_fastopen(&listener)?;
    }

    let server = {
        let (connections, delay) = (options.connections, options.accept_delay);
        let accept = if options.io_uring {
            accept_io_uring
        } else {
            accept_syscall
        };
        thread::spawn(move || serve(listener, connections, delay, accept))
    };
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (next, target, total) = (next.clone(), options.connect, options.connections);
            let fastopen = options.fastopen;
            thread::spawn(move || -> anyhow::Result<()> {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let mut stream = if fastopen {
                        connect_fastopen(target)
                    } else {
                        TcpStream::connect(target)
                    }
                    .with_context(|| format!("connect {target}"))?;
                    // The server closes after accept(): wait for it, so each connection's
                    // accept-queue wait is the server's alone.
                    let _ = stream.read(&mut [0u8; 1]);
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread panicked")?;
    }
    let accepted = server.join().expect("server thread panicked")?;
    println!(
        "scenario: {accepted} connections accepted on {} in {} us",
        options.listen,
        started.elapsed().as_micros()
    );
    Ok(())
}

/// Accepts `connections` connections, each `delay` after it became acceptable, and closes
/// them.
fn serve(
    listener: TcpListener,
    connections: usize,
    delay: Duration,
    accept: fn(&TcpListener) -> anyhow::Result<OwnedFd>,
) -> anyhow::Result<usize> {
    for _ in 0..connections {
        wait_acceptable(&listener)?;
        thread::sleep(delay);
        drop(accept(&listener)?);
    }
    Ok(connections)
}

fn accept_syscall(listener: &TcpListener) -> anyhow::Result<OwnedFd> {
    Ok(listener.accept()?.0.into())
}

/// One accept through an io_uring: the kernel accepts inside io_uring_enter, never through
/// the accept(2) or accept4(2) system calls.
fn accept_io_uring(listener: &TcpListener) -> anyhow::Result<OwnedFd> {
    let mut ring = io_uring::IoUring::new(2).context("io_uring_setup")?;
    let accept = io_uring::opcode::Accept::new(
        io_uring::types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build();
    // SAFETY: the entry refers to no buffer; the listener outlives the ring's use of it.
    unsafe { ring.submission().push(&accept) }.context("io_uring queue full")?;
    ring.submit_and_wait(1).context("io_uring_enter")?;
    let completion = ring
        .completion()
        .next()
        .context("io_uring gave no completion")?;
    let fd = completion.result();
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd)).context("io_uring accept");
    }
    // SAFETY: a successful accept completion is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Lets the listener complete handshakes from a SYN that carries data (TCP Fast Open).
fn enable_fastopen(listener: &TcpListener) -> anyhow::Result<()> {
    let queue: libc::c_int = 4096;
    // SAFETY: a valid socket and an int option.
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_FASTOPEN,
            (&raw const queue).cast(),
            std::mem::size_of_val(&queue) as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt TCP_FASTOPEN");
    }
    Ok(())
}

/// Connects with one byte in the SYN (sendto with MSG_FASTOPEN).
fn connect_fastopen(target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    let address = socket2::SockAddr::from(target);
    // SAFETY: a valid socket, a one-byte buffer and a socket address of the given length.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            b"x".as_ptr().cast(),
            1,
            libc::MSG_FASTOPEN,
            address.as_ptr().cast(),
            address.len(),
        )
    };
    if sent != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket.into())
}

/// Blocks until the accept queue holds a connection (poll for POLLIN on the listener).
fn wait_acceptable(listener: &TcpListener) -> anyhow::Result<()> {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut fd, 1, 10_000) };
        match ready {
            1 => return Ok(()),
            0 => bail!("no connection arrived within 10 s"),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error().into()),
        }
    }
}

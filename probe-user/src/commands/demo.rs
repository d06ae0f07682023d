//! `synscope demo`: a server that behaves like a single-threaded event loop doing CPU work, and
//! clients that keep more connections open than it can accept, so the accept queue fills.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::{Domain, Socket, Type};

use crate::{
    cli::TraceArgs,
    trace::{TraceOptions, signals},
};

/// Runs the demo server and clients for `--duration` (10 s by default), traced.
pub async fn run(args: &TraceArgs) -> anyhow::Result<u8> {
    let mut sink = super::open_sink(args)?;
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let server = Demo::bind()?;
    let options = TraceOptions {
        ports: vec![server.addr.port()],
        hooks: args.hooks,
        phases: args.phases == crate::cli::Phases::FirstResponse,
        syn_events: false,
    };
    eprintln!(
        "demo: a server on {} spends {} ms of CPU on each request in one thread\n\
         demo: (listen backlog {BACKLOG}), while {CLIENTS} clients connect in a loop for {}.",
        server.addr,
        HANDLER_CPU.as_millis(),
        humantime::format_duration(duration)
    );
    eprintln!(
        "demo: watch the accept wait grow to queue length x handler time, and the\n\
         demo: handshakes that overflow the queue wait for retransmits.\n"
    );
    let mut session = super::start_session(&options)?;
    server.start(duration)?;
    session
        .trace_until(signals::sleep_or_stop(duration))
        .await?;
    super::finish(&mut sink, &mut session, args)
}

/// listen() backlog: small, as in many default configurations, so the queue visibly fills.
pub const BACKLOG: i32 = 8;
/// CPU time the handler burns per request, blocking the accept loop meanwhile.
pub const HANDLER_CPU: Duration = Duration::from_millis(25);
/// Concurrent clients: twice what the queue holds.
pub const CLIENTS: usize = 16;
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

pub struct Demo {
    pub addr: SocketAddr,
    listener: TcpListener,
}

impl Demo {
    pub fn bind() -> anyhow::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .context("cannot bind the demo server to 127.0.0.1")?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
        })
    }

    /// Starts the server and the clients; both stop by themselves after `duration`.
    pub fn start(self, duration: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + duration;
        let listener = self.listener;
        thread::Builder::new()
            .name("demo-server".into())
            .spawn(move || serve(listener, deadline))?;
        for i in 0..CLIENTS {
            let addr = self.addr;
            thread::Builder::new()
                .name(format!("demo-client-{i}"))
                .spawn(move || client(addr, deadline))?;
        }
        Ok(())
    }
}

/// One request at a time, like an event loop whose handler does CPU work.
fn serve(listener: TcpListener, deadline: Instant) {
    while Instant::now() < deadline {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let mut request = [0u8; 64];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = stream.read(&mut request);
        burn_cpu(HANDLER_CPU);
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
    }
}

fn burn_cpu(time: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < time {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn client(addr: SocketAddr, deadline: Instant) {
    while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
    }
}

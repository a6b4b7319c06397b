//! Past one machine: several `tollstream serve` processes on one
//! PostgreSQL database, reached directly and through nginx
//! (`deploy/nginx.conf`), with the Rust client on loopback. One process
//! settles (an advisory lock), a client streams from one process at a time
//! (`NOTIFY`), and a killed process loses nothing acknowledged.

mod common;

use common::{LIFETIME, ServerOptions, ServerProcess, TestChain, args, within};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tollstream_client::{ServerEvent, Step, Viewer};
use tollstream_protocol::{ChannelState, ErrorCode, Secret};
use tollstream_server::store::ChannelStatus;
use tollstream_server::store::testing::create_database;

/// What a process logs when it takes the settler lock.
const SETTLER: &str = "this process now runs settlement";

/// A fleet member on `database`: short windows, and a pay timeout long
/// enough that a viewer the test is not driving just now waits, not fails.
/// `keys` is the key store of the fleet's first process (`--keys-dir`), so
/// all sell the same keys.
fn member(chain: &TestChain, database: &str, name: &str, keys: Option<&Path>) -> ServerProcess {
    let mut extra = args(&["--database-url", database, "--process-name", name, "--confirmations", "1"]);
    if let Some(keys) = keys {
        extra.extend(["--keys-dir".to_owned(), keys.display().to_string()]);
    }
    let options = ServerOptions { pay_timeout: 30.0, extra_args: extra, ..ServerOptions::default() };
    ServerProcess::start(chain, &options)
}

/// What one viewer saw: the sequences it paid, and the sequences whose
/// keys arrived (a re-sent secret after a resume is not counted again).
#[derive(Default)]
struct Seen {
    paid: Vec<u64>,
    acknowledged: Vec<u64>,
    secrets: Vec<Secret>,
}

impl Seen {
    fn acknowledged_up_to(&self) -> u64 {
        self.acknowledged.last().copied().unwrap_or(0)
    }
}

/// Answers payments until `until` holds of what was seen, or the channel
/// is spent; true when it is spent.
async fn drive(viewer: &mut Viewer, seen: &mut Seen, until: impl Fn(&Seen) -> bool, log: &str) -> bool {
    within(60, async {
        while !until(seen) {
            match viewer.next_step().await {
                Step::Paid { request, .. } => seen.paid.push(request.client_sequence_number),
                Step::Keys(secret) => {
                    seen.acknowledged.push(secret.client_sequence_number);
                    seen.secrets.push(secret);
                }
                Step::Final(secret) => {
                    seen.acknowledged.push(secret.client_sequence_number);
                    seen.secrets.push(secret);
                    return true;
                }
                other => panic!("unexpected {other:?}\n{log}"),
            }
        }
        false
    })
    .await
}

/// After `play` on a resumed channel: the re-sent secret of the last paid
/// window comes first.
async fn resent(viewer: &mut Viewer) -> Secret {
    within(30, async {
        match viewer.next_step().await {
            Step::Keys(secret) => secret,
            other => panic!("expected the re-sent secret, got {other:?}"),
        }
    })
    .await
}

/// Polls `check` every 100 ms until it returns `Some`, for at most
/// `seconds`; fails naming `what`, with `log()`.
async fn wait_until<T>(
    seconds: u64,
    what: &str,
    log: impl Fn() -> String,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {seconds} s waiting for {what}\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_survives_losing_its_settler_and_loses_no_payment() {
    const WINDOWS: u64 = 12;
    const BEFORE_KILL: u64 = 3;
    let database = create_database().await;
    let chain = TestChain::new().await;
    // The first process takes the settler lock before the others start.
    let first = member(&chain, &database, "first", None);
    first.wait_for(20, "the first process to settle", async || first.log().contains(SETTLER).then_some(())).await;
    let second = member(&chain, &database, "second", Some(&first.keys_dir()));
    let third = member(&chain, &database, "third", Some(&first.keys_dir()));
    let nginx = Nginx::start(&[&second.url, &third.url]);
    let fleet_log = || format!("first:\n{}\nsecond:\n{}\nthird:\n{}", first.log(), second.log(), third.log());

    // A viewer on each process, and one through nginx to the second and third.
    let entrances = [first.url.clone(), second.url.clone(), third.url.clone(), nginx.url()];
    let mut viewers = Vec::new();
    for url in &entrances {
        let wallet = chain.viewer_wallet().await;
        let mut viewer = Viewer::connect(url, wallet.clone()).await.unwrap();
        let opening = viewer.buy(&chain.rpc, WINDOWS, LIFETIME).await.unwrap();
        viewer.play("demo", 0).await.unwrap();
        viewers.push((viewer, wallet, opening, Seen::default()));
    }
    for (viewer, _, _, seen) in &mut viewers {
        drive(viewer, seen, |seen| seen.acknowledged_up_to() >= BEFORE_KILL, &fleet_log()).await;
    }
    // Every payment so far is in the shared store, whichever process took it.
    for (viewer, _, opening, seen) in &viewers {
        let stored = second.stored(viewer).await.expect("the channel is stored");
        assert_eq!(stored.state.channel_id, opening.channel_id);
        assert_eq!(stored.state.client_sequence_number, seen.acknowledged_up_to());
    }

    // The settler dies mid-stream (SIGKILL: no shutdown at all).
    let killed = Command::new("kill").args(["-KILL", &first.pid().to_string()]).status().unwrap();
    assert!(killed.success());

    // Its viewer comes back on another process, at the stored sequence.
    let (viewer, wallet, opening, seen) = &mut viewers[0];
    let stored = second.stored(viewer).await.unwrap();
    assert!(stored.state.client_sequence_number >= seen.acknowledged_up_to(), "nothing acknowledged is lost");
    *viewer = Viewer::connect(&second.url, wallet.clone()).await.unwrap();
    let resumed = viewer.resume().await.unwrap().expect("the channel is still there");
    assert_eq!(resumed, stored.state);
    assert_eq!(resumed.channel_id, opening.channel_id);
    viewer.play("demo", resumed.client_sequence_number - 1).await.unwrap();
    assert_eq!(resent(viewer).await.client_sequence_number, resumed.client_sequence_number);

    // Everyone watches to the end of their channel.
    for (viewer, _, _, seen) in &mut viewers {
        assert!(drive(viewer, seen, |_| false, &fleet_log()).await, "the channel is spent");
    }
    let every: Vec<u64> = (1..=WINDOWS).collect();
    for (viewer, _, opening, seen) in &viewers {
        assert_eq!(seen.paid, every, "each window paid once, in order");
        assert_eq!(seen.acknowledged, every, "each payment acknowledged once");
        let stored = second.stored(viewer).await.unwrap();
        assert_eq!(stored.state.channel_id, opening.channel_id);
        assert_eq!(stored.state.client_sequence_number, WINDOWS);
    }

    // A survivor takes settlement over and closes every channel, all spent
    // after the kill, exactly once.
    wait_until(20, "a survivor to take settlement over", fleet_log, async || {
        (second.log().contains(SETTLER) || third.log().contains(SETTLER)).then_some(())
    })
    .await;
    for (_, _, opening, _) in &viewers {
        let channel = opening.channel_id;
        wait_until(30, "the channel to close on chain", fleet_log, async || {
            (!chain.closed_events(channel).await.is_empty()).then_some(())
        })
        .await;
    }
    for (viewer, _, opening, _) in &viewers {
        wait_until(20, "the store to record the close", fleet_log, async || {
            let stored = second.stored(viewer).await?;
            (stored.status == ChannelStatus::Closed).then_some(())
        })
        .await;
        let closed = chain.closed_events(opening.channel_id).await;
        assert_eq!(closed.len(), 1, "closed exactly once: {closed:?}");
    }
    assert!(!(second.log().contains(SETTLER) && third.log().contains(SETTLER)), "one settler at a time");

    // The fourth viewer's WebSocket really went through nginx, which logs
    // an upgraded request when it closes.
    drop(viewers);
    wait_until(
        10,
        "nginx to log the WebSocket",
        || nginx.log(),
        async || {
            let log = nginx.access_log();
            (log.contains("GET /socket.io/") && log.contains(" 101 ")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_another_process_ends_its_session_on_the_first() {
    let database = create_database().await;
    let chain = TestChain::new().await;
    let a = member(&chain, &database, "a", None);
    let b = member(&chain, &database, "b", Some(&a.keys_dir()));
    let log = || format!("a:\n{}\nb:\n{}", a.log(), b.log());
    let wallet = chain.viewer_wallet().await;

    let mut on_a = Viewer::connect(&a.url, wallet.clone()).await.unwrap();
    let opening = on_a.buy(&chain.rpc, 50, LIFETIME).await.unwrap();
    on_a.play("demo", 0).await.unwrap();
    let mut seen = Seen::default();
    drive(&mut on_a, &mut seen, |seen| seen.acknowledged_up_to() >= 3, &log()).await;
    // From here the first connection answers nothing: every payment from
    // now on is the second's.
    let acknowledged = seen.acknowledged_up_to();

    let mut on_b = Viewer::connect(&b.url, wallet).await.unwrap();
    let resumed = on_b.resume().await.unwrap().expect("B sees the channel A sold on");
    assert_eq!(resumed.channel_id, opening.channel_id);
    assert_eq!(resumed.client_sequence_number, acknowledged);
    on_b.play("demo", acknowledged - 1).await.unwrap();

    // A ends its session of the client at once.
    let client = on_a.client_mut();
    let replaced = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match client.next_event().await.unwrap() {
                // Never answered: B streams now.
                ServerEvent::Pay(_, answer) => std::mem::forget(answer),
                ServerEvent::Error(error) => break error,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("A did not end its session within 2 s\n{}", log()));
    assert_eq!(replaced.code, ErrorCode::SessionReplaced);
    assert_eq!(replaced.client_public_key, Some(resumed.client_public_key));

    // B goes on at the next sequence; nothing is paid twice.
    // The same keys for the same window: the processes share a key store.
    let again = resent(&mut on_b).await;
    assert_eq!(again.client_sequence_number, acknowledged);
    assert_eq!(Some(&again.keys), seen.secrets.last().map(|secret| &secret.keys));
    let mut moved = Seen::default();
    drive(&mut on_b, &mut moved, |seen| seen.acknowledged.len() >= 3, &log()).await;
    let after: Vec<u64> = (acknowledged + 1..=acknowledged + 3).collect();
    assert_eq!(moved.acknowledged, after);
    assert_eq!(&moved.paid[..3], &after[..]);
    let all: BTreeSet<u64> = seen.paid.iter().chain(&moved.paid).copied().collect();
    assert_eq!(all.len(), seen.paid.len() + moved.paid.len(), "no sequence paid twice");
    let stored: ChannelState = b.stored(&on_b).await.unwrap().state;
    assert!(stored.client_sequence_number >= acknowledged + 3);
}

/// Debian's nginx as a child process with a test copy of
/// `deploy/nginx.conf`: the given upstreams, a free loopback port, and this
/// directory for its files. Killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = test_config(upstreams, port, dir.path());
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let prefix = format!("{}/", dir.path().display());
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg(format!("daemon off; pid {}; error_log stderr;", dir.path().join("nginx.pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nginx is installed (Debian's nginx package)");
        let nginx = Nginx { child, port, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start\n{}", nginx.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The requests it proxied.
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// SIGTERM, nginx's fast shutdown: the master stops its workers before
    /// it exits. SIGKILL would leave the workers running, holding the port.
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill has no memory effects; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The committed configuration with the example upstreams replaced by
/// `upstreams`, listening on `port` on loopback, logging requests in `dir`
/// (not in the system's log directory); as root, workers run as root (the
/// default `nobody` could not read the test's directory).
fn test_config(upstreams: &[&str], port: u16, dir: &Path) -> String {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx.conf");
    let committed = std::fs::read_to_string(committed).unwrap();
    let mut config = String::new();
    // SAFETY: geteuid cannot fail and has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        config.push_str("user root;\n");
    }
    for line in committed.lines() {
        let directive = line.trim();
        if directive.starts_with("server 127.0.0.1:") {
            continue;
        }
        if directive == "listen 80;" {
            config.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            continue;
        }
        config.push_str(line);
        config.push('\n');
        if directive == "http {" {
            config.push_str(&format!("    access_log {};\n", dir.join("access.log").display()));
        }
        if directive == "ip_hash;" {
            for upstream in upstreams {
                config.push_str(&format!("        server {};\n", upstream.trim_start_matches("http://")));
            }
        }
    }
    assert!(config.contains(&format!("listen 127.0.0.1:{port};")), "deploy/nginx.conf has no `listen 80;`");
    config
}

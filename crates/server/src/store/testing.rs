//! A throwaway PostgreSQL server for tests, as the chain crate's harness
//! runs anvil: Debian's binaries, a fresh cluster in a temporary directory
//! (`initdb` with trust authentication for the user `tollstream`),
//! `postgres` on a free loopback port, and a fresh database per test
//! ([`create_database`]), so tests share one server and nothing else.
//!
//! One server serves every test of a test binary ([`shared`]): a cluster
//! takes about a second to create and start, a database a few
//! milliseconds. It runs with `fsync=off`, as durability across a power
//! cut is not what a test checks, and dies with the test process
//! (`PR_SET_PDEATHSIG`), even one that crashed; the directory of a server
//! whose test process is gone is removed by the next one.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run
//! as the `postgres` user Debian's package creates.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Where Debian installs each major version's binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// The superuser `initdb` creates; it connects without a password.
const USER: &str = "tollstream";

/// The prefix of the temporary directories, so stale ones can be found.
const DIR_PREFIX: &str = "tollstream-postgres-";

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts at a free port before giving up: another process can take
/// the one picked between its check and `postgres` binding it.
const PORT_ATTEMPTS: usize = 5;

/// The lines of the server's log kept for error messages.
const LOG_LINES: usize = 40;

/// Why a test server could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TestPostgresError {
    #[error(
        "PostgreSQL is not installed (no {DEBIAN_LIB}/<version>/bin, no initdb on PATH): run scripts/setup, \
         which installs Debian's postgresql, or set TOLLSTREAM_PG_BINDIR to a directory holding initdb and postgres"
    )]
    NotInstalled,
    #[error("cannot start PostgreSQL: {0}")]
    Start(String),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// A running PostgreSQL server in a temporary directory: stopped, and the
/// directory removed, when dropped.
pub struct TestPostgres {
    child: Child,
    port: u16,
    /// The server's recent log lines, for error messages.
    log: Arc<Mutex<Vec<String>>>,
    /// Removed after the server stopped (see `Drop`).
    dir: Option<TempDir>,
}

/// How the server's processes are started: as whom, and whether they die
/// with the thread that started them.
struct Launch {
    /// The `postgres` user's uid and gid, when running as root.
    run_as: Option<(u32, u32)>,
    die_with_parent_thread: bool,
}

impl Launch {
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.stdin(Stdio::null()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            // Switched by the child itself, not through `runuser`: a
            // credential change clears the parent-death signal, and
            // `runuser` would keep a process of its own in between; here
            // the switch happens before the `pre_exec` hook below sets it.
            command.uid(uid).gid(gid);
        }
        if self.die_with_parent_thread {
            // SAFETY: prctl is async-signal-safe and touches only this process.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
    }
}

impl TestPostgres {
    /// Creates a cluster in a fresh temporary directory and starts a
    /// server on a free loopback port; it runs until dropped.
    ///
    /// # Errors
    /// `NotInstalled` when Debian's postgresql is missing; `Start` when the
    /// cluster cannot be created or the server does not come up.
    pub fn start() -> Result<TestPostgres, TestPostgresError> {
        Self::start_with(false)
    }

    fn start_with(die_with_parent_thread: bool) -> Result<TestPostgres, TestPostgresError> {
        let bin = bin_dir()?;
        let start = |what: &str, error: std::io::Error| TestPostgresError::Start(format!("{what}: {error}"));
        remove_stale_dirs();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().map_err(|e| start("temporary directory", e))?;
        // Whose server this is, so a later run can tell whether it is stale.
        std::fs::write(dir.path().join("owner"), std::process::id().to_string()).map_err(|e| start("owner file", e))?;
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).map_err(|e| start("socket directory", e))?;
        // SAFETY: geteuid cannot fail and has no side effects.
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(postgres_user()?) } else { None };
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| start("chown", e))?;
            }
        }
        let launch = Launch { run_as, die_with_parent_thread };

        let data = dir.path().join("data");
        let output = launch
            .command(&bin.join("initdb"))
            .current_dir(dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "--no-sync", "--no-locale", "--encoding=UTF8"])
            .output()
            .map_err(|e| start(&format!("{}", bin.join("initdb").display()), e))?;
        if !output.status.success() {
            return Err(TestPostgresError::Start(format!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }

        let mut last_log = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port().map_err(|e| start("free port", e))?;
            let mut child = launch
                .command(&bin.join("postgres"))
                .current_dir(dir.path())
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
                // Room for the pools of many tests and servers at once.
                .args(["-c", "max_connections=300"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| start(&format!("{}", bin.join("postgres").display()), e))?;
            let stderr = child.stderr.take().ok_or_else(|| TestPostgresError::Start("no stderr".into()))?;
            let log = Arc::new(Mutex::new(Vec::new()));
            let (ready_tx, ready_rx) = mpsc::channel();
            let kept = log.clone();
            std::thread::Builder::new()
                .name("postgres-log".into())
                .spawn(move || read_log(BufReader::new(stderr), &kept, ready_tx))
                .map_err(|e| start("log thread", e))?;
            match ready_rx.recv_timeout(START_TIMEOUT) {
                Ok(()) => return Ok(TestPostgres { child, port, log, dir: Some(dir) }),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    last_log = log.lock().map(|lines| lines.clone()).unwrap_or_default();
                    let clash = last_log.iter().any(|line| line.contains("could not bind"));
                    if !clash {
                        return Err(TestPostgresError::Start(format!(
                            "postgres did not accept connections (exit status {status:?}); its log:\n{}",
                            last_log.join("\n")
                        )));
                    }
                }
            }
        }
        Err(TestPostgresError::Start(format!(
            "no free port in {PORT_ATTEMPTS} attempts; the last log:\n{}",
            last_log.join("\n")
        )))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's recent log lines, to explain a failure.
    pub fn recent_log(&self) -> Vec<String> {
        self.log.lock().map(|lines| lines.clone()).unwrap_or_default()
    }

    /// Creates an empty database and returns its URL.
    ///
    /// # Errors
    /// `Database` when the server refuses.
    pub async fn create_database(&self) -> Result<String, TestPostgresError> {
        use sqlx::{Connection, Executor};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let _ = admin.close().await;
        Ok(self.url(&name))
    }

    /// Stops the server: a fast shutdown (`SIGINT`: sessions are ended,
    /// not waited for), then `SIGKILL` if it lingers.
    fn stop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        drop(self.dir.take());
    }
}

/// The server every test of this test binary shares, started on first
/// use. It is spawned from a thread that never ends, so
/// `PR_SET_PDEATHSIG` fires only when the process exits.
///
/// # Panics
/// When the server cannot be started (PostgreSQL missing, say): every
/// test that needs it fails then, with the reason.
pub fn shared() -> &'static TestPostgres {
    static SHARED: OnceLock<TestPostgres> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(TestPostgres::start_with(true));
            loop {
                std::thread::park();
            }
        });
        match rx.recv() {
            Ok(Ok(server)) => server,
            Ok(Err(error)) => panic!("{error}"),
            Err(_) => panic!("the PostgreSQL thread ended before reporting"),
        }
    })
}

/// A fresh, empty database on the [`shared`] server: its URL.
///
/// # Panics
/// When the server cannot be started or refuses to create a database.
pub async fn create_database() -> String {
    let server = shared();
    match server.create_database().await {
        Ok(url) => url,
        Err(error) => panic!("{error}; the server's log:\n{}", server.recent_log().join("\n")),
    }
}

/// The directory holding `initdb` and `postgres`: `$TOLLSTREAM_PG_BINDIR`,
/// then the newest of Debian's `/usr/lib/postgresql/<version>/bin`, then
/// `PATH`.
///
/// # Errors
/// `NotInstalled` when none holds both.
pub fn bin_dir() -> Result<PathBuf, TestPostgresError> {
    let complete = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("TOLLSTREAM_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) { Ok(dir) } else { Err(TestPostgresError::NotInstalled) };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| complete(dir))
        .ok_or(TestPostgresError::NotInstalled)
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> Result<(u32, u32), TestPostgresError> {
    let name = c"postgres";
    // SAFETY: getpwnam_r writes only into the buffers given; `entry` is
    // read only when it reports a match.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut buffer = vec![0 as libc::c_char; 4096];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let status = libc::getpwnam_r(name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
        if status != 0 || found.is_null() {
            return Err(TestPostgresError::Start(
                "running as root, and there is no postgres user to run PostgreSQL as: run scripts/setup".into(),
            ));
        }
        Ok((entry.pw_uid, entry.pw_gid))
    }
}

/// A loopback port free a moment ago. `postgres` binds it itself, so
/// another process can take it first: the caller retries on a clash.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Keeps the last lines of the server's log, reports when it accepts
/// connections, and drains the pipe until the server exits.
fn read_log(reader: impl BufRead, log: &Mutex<Vec<String>>, ready: mpsc::Sender<()>) {
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.contains("database system is ready to accept connections") {
            let _ = ready.send(());
        }
        if let Ok(mut lines) = log.lock() {
            if lines.len() == LOG_LINES {
                lines.remove(0);
            }
            lines.push(line);
        }
    }
}

/// Removes the directories of servers whose test process is gone (it
/// crashed, or exited with the shared server running: statics are never
/// dropped). A directory whose owner still runs is left alone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let is_ours = entry.file_name().to_str().is_some_and(|name| name.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner")).ok().and_then(|pid| pid.trim().parse().ok());
        // SAFETY: kill with signal 0 only checks that the process exists
        // (EPERM: it does, as another user's).
        let alive = owner.is_some_and(|pid: i32| {
            let status = unsafe { libc::kill(pid, 0) };
            status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        });
        if owner.is_some() && !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

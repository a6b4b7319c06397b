//! Integration tests of the Socket.IO client against a real socketioxide 0.18 server
//! (and, for failure modes socketioxide cannot produce, a scripted raw WebSocket server).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo as ServerIo, SocketIoBuilder};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tollstream_client::socketio::{Incoming, SocketIo, SocketIoError};

/// Generous bound for things that should happen "now"; only hit when a test fails.
const WAIT: Duration = Duration::from_secs(5);

/// What the server tells the test: (what happened, data).
type Report = (String, Value);

/// Starts a socketioxide server on 127.0.0.1 with the test handlers; returns its base URL.
async fn start_server(
    configure: impl FnOnce(SocketIoBuilder) -> SocketIoBuilder,
    reports: mpsc::UnboundedSender<Report>,
) -> String {
    let (layer, io) = configure(ServerIo::builder()).build_layer();
    register_handlers(&io, reports);
    serve(axum::Router::new().layer(layer)).await
}

async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn register_handlers(io: &ServerIo, reports: mpsc::UnboundedSender<Report>) {
    io.ns("/", move |socket: SocketRef| {
        let reports = reports.clone();
        async move { on_connect(socket, reports) }
    });
}

fn on_connect(socket: SocketRef, reports: mpsc::UnboundedSender<Report>) {
    socket.on("echo", async |Data(v): Data<Value>, ack: AckSender| {
        ack.send(&v).ok();
    });
    let r = reports.clone();
    socket.on("note", move |Data(v): Data<Value>| {
        let r = r.clone();
        async move {
            r.send(("note".into(), v)).ok();
        }
    });
    socket.on("push", async |s: SocketRef, Data(v): Data<Value>| {
        s.emit("pushed", &v).ok();
    });
    let r = reports.clone();
    socket.on("ask", move |s: SocketRef, Data(v): Data<Value>| {
        let r = r.clone();
        async move {
            let answer = match s.timeout(WAIT).emit_with_ack::<_, Value>("question", &v) {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let report = match answer {
                Ok(v) => ("answer".into(), v),
                Err(e) => ("answer_error".into(), Value::String(e)),
            };
            r.send(report).ok();
        }
    });
    // Never acknowledges although the client asked for an ack.
    socket.on("silent", async |_: Data<Value>| {});
    // Disconnects instead of acknowledging, leaving the client's ack pending.
    socket.on("kick", async |s: SocketRef, _: AckSender| {
        s.disconnect().ok();
    });
    let r = reports.clone();
    socket.on_disconnect(move |reason: DisconnectReason| {
        let r = r.clone();
        async move {
            r.send(("disconnect".into(), Value::String(format!("{reason:?}")))).ok();
        }
    });
    // Handlers are registered now. socketioxide sends the CONNECT reply *before* it
    // runs this handler, so a client must not emit before this "hello" arrives.
    socket.emit("hello", &socket.id.to_string()).ok();
}

/// Connects and waits for the server's "hello" (so its handlers exist); returns the
/// client, its event receiver and the sid the server reported.
async fn connect_ready(url: &str) -> (SocketIo, mpsc::Receiver<Incoming>, String) {
    let (client, mut rx) = SocketIo::connect(url).await.expect("connect");
    let hello = next_event(&mut rx).await;
    assert_eq!(hello.event, "hello");
    assert!(hello.ack.is_none());
    let server_sid = hello.data.as_str().expect("sid string").to_owned();
    (client, rx, server_sid)
}

async fn next_event(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("event in time").expect("connection still open")
}

async fn next_report(reports: &mut mpsc::UnboundedReceiver<Report>) -> Report {
    tokio::time::timeout(WAIT, reports.recv()).await.expect("report in time").expect("server alive")
}

async fn setup() -> (SocketIo, mpsc::Receiver<Incoming>, String, mpsc::UnboundedReceiver<Report>) {
    let (tx, reports) = mpsc::unbounded_channel();
    let url = start_server(|b| b, tx).await;
    let (client, rx, sid) = connect_ready(&url).await;
    (client, rx, sid, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_the_servers_socket_id() {
    let (client, _rx, server_sid, _reports) = setup().await;
    assert_eq!(client.sid(), server_sid);
    assert!(client.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_with_ack_round_trips_nested_json() {
    let (client, _rx, _sid, _reports) = setup().await;
    let data = json!({
        "text": "a \"quoted\" string, unicode é ✓ 🚀, backslash \\ and newline\n",
        "nested": {"list": [1, 2.5, null, true, {"deep": []}], "empty": {}},
        "big": 18_446_744_073_709_551_615u64,
    });
    let ack = client.emit_with_ack("echo", &data, WAIT).await.expect("ack");
    assert_eq!(ack, data);
    // Consecutive calls get distinct ids and each gets its own answer.
    let (one, two) = (json!(1), json!("two"));
    let (a, b) = tokio::join!(client.emit_with_ack("echo", &one, WAIT), client.emit_with_ack("echo", &two, WAIT),);
    assert_eq!((a.expect("a"), b.expect("b")), (json!(1), json!("two")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_acknowledges_a_server_event() {
    let (client, mut rx, _sid, mut reports) = setup().await;
    client.emit("ask", &json!({"q": "life"})).await.expect("emit");
    let question = next_event(&mut rx).await;
    assert_eq!(question.event, "question");
    assert_eq!(question.data, json!({"q": "life"}));
    let acker = question.ack.expect("server asked for an ack");
    assert!(acker.id() >= 1, "socketioxide ack ids start at 1");
    acker.send(&json!({"answer": 42})).await.expect("ack sent");
    assert_eq!(next_report(&mut reports).await, ("answer".to_owned(), json!({"answer": 42})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_emits_in_both_directions() {
    let (client, mut rx, _sid, mut reports) = setup().await;
    client.emit("note", &json!({"n": [1, "x"]})).await.expect("emit");
    assert_eq!(next_report(&mut reports).await, ("note".to_owned(), json!({"n": [1, "x"]})));

    client.emit("push", &json!("hi")).await.expect("emit");
    let pushed = next_event(&mut rx).await;
    assert_eq!(pushed.event, "pushed");
    assert_eq!(pushed.data, json!("hi"));
    assert!(pushed.ack.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_an_idle_connection_alive() {
    let (tx, mut reports) = mpsc::unbounded_channel();
    let url =
        start_server(|b| b.ping_interval(Duration::from_millis(200)).ping_timeout(Duration::from_millis(200)), tx)
            .await;
    let (client, mut rx, _sid) = connect_ready(&url).await;

    // Idle for several ping periods; without pongs the server would drop us after ~400 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert!(client.is_connected());
    assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)));
    assert!(reports.try_recv().is_err(), "server saw a disconnect");
    let ack = client.emit_with_ack("echo", &json!("still here"), WAIT).await.expect("ack after idling");
    assert_eq!(ack, json!("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_disconnect_ends_the_connection() {
    let (client, mut rx, _sid, mut reports) = setup().await;
    // The server disconnects instead of acking: the pending call must fail, not hang.
    let pending = client.emit_with_ack("kick", &json!(null), WAIT).await;
    assert!(matches!(pending, Err(SocketIoError::Disconnected)), "{pending:?}");
    let end = tokio::time::timeout(WAIT, rx.recv()).await.expect("end in time");
    assert!(end.is_none(), "receiver must end, got {end:?}");
    assert!(!client.is_connected());
    let next = client.emit_with_ack("echo", &json!(1), WAIT).await;
    assert!(matches!(next, Err(SocketIoError::Disconnected)), "{next:?}");
    let emit = client.emit("note", &json!(1)).await;
    assert!(matches!(emit, Err(SocketIoError::Disconnected)), "{emit:?}");
    assert_eq!(next_report(&mut reports).await, ("disconnect".to_owned(), json!("ServerNSDisconnect")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_with_ack_times_out_without_an_ack() {
    let (client, _rx, _sid, _reports) = setup().await;
    let res = client.emit_with_ack("silent", &json!({}), Duration::from_millis(200)).await;
    assert!(matches!(res, Err(SocketIoError::Timeout)), "{res:?}");
    // A timeout does not hurt the connection.
    assert!(client.is_connected());
    let ack = client.emit_with_ack("echo", &json!(7), WAIT).await;
    assert_eq!(ack.expect("ack"), json!(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_disconnect_and_flushes_earlier_emits() {
    let (client, mut rx, _sid, mut reports) = setup().await;
    client.emit("note", &json!("last words")).await.expect("emit");
    client.close().await;
    assert!(!client.is_connected());
    // socketioxide runs each handler in its own task, so the two reports may come in
    // either order.
    let mut seen = vec![next_report(&mut reports).await, next_report(&mut reports).await];
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [("disconnect".to_owned(), json!("ClientNSDisconnect")), ("note".to_owned(), json!("last words")),]
    );
    let end = tokio::time::timeout(WAIT, rx.recv()).await.expect("end in time");
    assert!(end.is_none());
    let res = client.emit("note", &json!(1)).await;
    assert!(matches!(res, Err(SocketIoError::Disconnected)), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_connection() {
    let (client, mut rx, _sid, mut reports) = setup().await;
    let clone = client.clone();
    drop(client);
    assert!(clone.is_connected(), "a clone keeps the connection");
    drop(clone);
    assert_eq!(next_report(&mut reports).await, ("disconnect".to_owned(), json!("ClientNSDisconnect")));
    let end = tokio::time::timeout(WAIT, rx.recv()).await.expect("end in time");
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_error_is_reported() {
    async fn refuse() -> Result<(), &'static str> {
        Err("go away")
    }
    let (layer, io) = ServerIo::builder().build_layer();
    io.ns("/", (async |_: SocketRef| {}).with(refuse));
    let url = serve(axum::Router::new().layer(layer)).await;
    let res = SocketIo::connect(&url).await;
    match res {
        Err(SocketIoError::Rejected(message)) => assert_eq!(message, "go away"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_fails() {
    // Bind then drop to get a port with (almost certainly) no listener.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let res = SocketIo::connect(&format!("http://{addr}")).await;
    assert!(matches!(res, Err(SocketIoError::Connect(_))), "{res:?}");
}

/// A scripted Engine.IO server on a raw WebSocket: sends `open`, answers CONNECT with
/// `sid`, then sends `script` frames and stays silent (no pings) while keeping the
/// socket open. Every text frame the client sends is forwarded to the returned channel.
async fn scripted_server(ping_ms: u64, script: Vec<Message>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("ws accept");
        let open = format!(
            r#"0{{"sid":"eio-sid","upgrades":[],"pingInterval":{ping_ms},"pingTimeout":{ping_ms},"maxPayload":1000}}"#
        );
        ws.send(Message::text(open)).await.expect("open");
        // A ping before the CONNECT reply, as engineioxide does.
        ws.send(Message::text("2")).await.expect("ping");
        let mut script = Some(script);
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let text = text.as_str().to_owned();
            seen_tx.send(text.clone()).ok();
            if text == "40" {
                ws.send(Message::text(r#"40{"sid":"sio-sid"}"#)).await.expect("connect reply");
                for frame in script.take().unwrap_or_default() {
                    ws.send(frame).await.expect("script");
                }
            }
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_skipped() {
    let garbage = [
        "",
        "x",
        "4",
        "42",
        "42notjson",
        "42[1]",
        "42{}",
        "43[]",
        "43abc[]",
        "44{}",
        "4é",
        "42é",
        r#"42/other,["other-ns",1]"#,
        r#"451-["bin",{"_placeholder":true,"num":0}]"#,
        r#"42999999999999999999999["x"]"#,
        "3",
        "6",
    ];
    let mut script: Vec<Message> = garbage.iter().map(|g| Message::text(*g)).collect();
    script.push(Message::binary(vec![1u8, 2, 3]));
    script.push(Message::text(r#"42["ok",{"v":1},"extra"]"#));
    script.push(Message::text(r#"425["with-ack"]"#));
    let (url, mut seen) = scripted_server(5_000, script).await;
    let (client, mut rx) = SocketIo::connect(&url).await.expect("connect");
    assert_eq!(client.sid(), "sio-sid");

    let ok = next_event(&mut rx).await;
    assert_eq!((ok.event.as_str(), &ok.data), ("ok", &json!({"v": 1})));
    assert!(ok.ack.is_none());
    let with_ack = next_event(&mut rx).await;
    assert_eq!(with_ack.event, "with-ack");
    assert_eq!(with_ack.data, Value::Null);
    let acker = with_ack.ack.expect("ack requested");
    assert_eq!(acker.id(), 5);
    acker.send(&json!([1, "a"])).await.expect("ack");
    assert!(client.is_connected());

    // What the client sent: CONNECT (right after `open`), the pong to the early ping,
    // then the ack frame.
    let mut frames = Vec::new();
    while frames.len() < 3 {
        frames.push(tokio::time::timeout(WAIT, seen.recv()).await.expect("frame in time").expect("server alive"));
    }
    assert_eq!(frames, ["40", "3", r#"435[[1,"a"]]"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_detected_as_dead() {
    // pingInterval + pingTimeout = 300 ms without any frame → dead.
    let (url, _seen) = scripted_server(150, Vec::new()).await;
    let (client, mut rx) = SocketIo::connect(&url).await.expect("connect");
    let data = json!(1);
    let pending = client.emit_with_ack("never", &data, WAIT);
    let (pending, end) =
        tokio::join!(pending, async { tokio::time::timeout(WAIT, rx.recv()).await.expect("end in time") });
    assert!(end.is_none());
    assert!(matches!(pending, Err(SocketIoError::Disconnected)), "{pending:?}");
    assert!(!client.is_connected());
}

//! A third-party client written from PROTOCOL.md alone, with the official
//! `socket.io-client` and `viem` (`tests/js/interop-client.mjs`), completes
//! the seed cycle against the server.

mod common;

use common::{ServerOptions, ServerProcess, TestChain, hex};
use std::process::Command;
use tollstream_server::store::{ChannelStatus, Store};

#[tokio::test]
async fn the_node_reference_client_completes_the_cycle() {
    let chain = TestChain::new().await;
    let server = ServerProcess::start(&chain, &ServerOptions { window_seconds: 0.3, ..Default::default() });
    let wallet = chain.viewer_wallet().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = tokio::task::spawn_blocking({
        let url = server.url.clone();
        let rpc = chain.rpc.clone();
        let key = format!("0x{}", hex(&wallet.to_bytes()));
        move || {
            Command::new("node")
                .args(["tests/js/interop-client.mjs", "--server", &url, "--rpc", &rpc, "--private-key", &key])
                .args(["--windows", "3"])
                .current_dir(root)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop client failed:\n{stdout}\n{stderr}\n{}", server.log());
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["payments"], 3);
    assert_eq!(summary["secrets"], 3);

    // The server's store agrees: one channel, spent, at sequence 3.
    let channels = server.store().await.list().await.unwrap();
    assert_eq!(channels.len(), 1);
    // Spent: final, or already being closed by the settlement worker.
    assert!(
        matches!(channels[0].status, ChannelStatus::Final | ChannelStatus::Closing | ChannelStatus::Closed),
        "{:?}",
        channels[0].status
    );
    assert_eq!(channels[0].state.client_sequence_number, 3);
    assert_eq!(format!("{:#x}", channels[0].state.channel_id), summary["channel_id"].as_str().unwrap());
    assert_eq!(channels[0].state.server_balance.to_string(), summary["final_server_balance"].as_str().unwrap());
}

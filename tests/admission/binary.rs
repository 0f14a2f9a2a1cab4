//! The `kubeharden admission` binary: flags from the environment, logs that name requests but
//! hold no object contents, a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{Client, Pki, bare_pod, review};

#[tokio::test]
async fn the_binary_serves_logs_no_contents_and_stops_on_sigterm() {
    let pki = Pki::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .arg("admission")
        .env("LISTEN", "127.0.0.1:0")
        .env("TLS_CERT", pki.cert())
        .env("TLS_KEY", pki.key())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server says where it listens");
        log.push(line.clone());
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut client = Client::connect(addr, &pki.ca_pem).await;
    let mut pod = bare_pod("web");
    pod["spec"]["containers"][0]["env"] = json!([{"name": "TOKEN", "value": "s3cr3t-do-not-log"}]);
    let r = client
        .review("/validate/enforce/nsa", &review("CREATE", &pod, None))
        .await;
    assert_eq!(r["allowed"], false);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    log.extend(lines_rx.try_iter());
    let log = log.join("\n");
    assert!(log.contains("admission review"), "{log}");
    assert!(
        log.contains("outcome=\"denied\"") || log.contains("outcome=denied"),
        "{log}"
    );
    assert!(
        !log.contains("s3cr3t-do-not-log"),
        "object contents in the log:\n{log}"
    );
    assert!(
        !log.contains("nginx:1.27"),
        "object contents in the log:\n{log}"
    );
}

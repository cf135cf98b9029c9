//! s3s-fs (the `s3s` project's file-system-backed S3 server) in the test process on a loopback port,
//! reached through object_store's S3 client and, unsigned, its GCS client (object_store speaks GCS's
//! XML API, which takes S3's path-style requests). [`S3Server::stop`] takes it down the way a crashed
//! server goes (listener and every open connection), and [`S3Server::restart`] brings it back on the
//! same address over the same files.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub struct S3Server {
    pub endpoint: String,
    addr: SocketAddr,
    dir: PathBuf,
    auth: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves `dir` (bucket `test-bucket`) on a free loopback port. Without `auth` it takes
    /// unsigned requests (the GCS client with OAuth disabled).
    pub fn start(dir: &Path, auth: bool) -> S3Server {
        std::fs::create_dir_all(dir.join("test-bucket")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = S3Server {
            endpoint: format!("http://{addr}"),
            addr,
            dir: dir.to_path_buf(),
            auth,
            stop: None,
            thread: None,
        };
        s.serve(listener);
        s
    }

    /// Stops serving: the port refuses connections and open connections are closed.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Serves the same files on the same address again.
    pub fn restart(&mut self) {
        self.stop();
        let listener = std::net::TcpListener::bind(self.addr).unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (fs_root, auth) = (self.dir.clone(), self.auth);
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tokio::select! {
                    _ = accept_loop(listener, fs_root, auth) => {}
                    _ = rx => {}
                }
            });
            // drops every connection task: clients see their connections fail
            rt.shutdown_background();
        }));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: std::net::TcpListener, fs_root: PathBuf, auth: bool) {
    let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&fs_root).unwrap());
    if auth {
        b.set_auth(s3s::auth::SimpleAuth::from_single("testing", "testing"));
    }
    let service = b.build();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let svc = service.clone();
        // GCS clients send `Authorization: Bearer ...` (empty with OAuth disabled), which an S3
        // server reads as a malformed signature: drop it for the unsigned server.
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let svc = svc.clone();
                async move {
                    let bearer = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer"));
                    if bearer && !auth {
                        req.headers_mut().remove("authorization");
                    }
                    hyper::service::Service::call(&svc, req).await
                }
            });
        tokio::spawn(async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
        });
    }
}

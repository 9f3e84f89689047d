//! A simulated PLC: a real Modbus TCP server (tokio-modbus) over a register
//! bank the physics task updates. It can be taken down and brought back (the
//! "PLC that goes away" fault); taking it down closes every open connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};
use tracing::{debug, warn};

use crate::connectors::modbus::codec;
use crate::connectors::modbus::{ModbusSource, RegisterTable};

/// Registers of one simulated PLC.
#[derive(Debug, Default)]
pub struct Bank {
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
    pub coils: Vec<bool>,
}

impl Bank {
    /// A bank large enough for a register map.
    pub fn for_map(src: &ModbusSource) -> Self {
        let mut b = Bank::default();
        for (_, r) in &src.registers {
            let end = (r.address + r.register_type.width()) as usize;
            let v = match r.table {
                RegisterTable::Holding => &mut b.holding,
                RegisterTable::Input => &mut b.input,
                RegisterTable::Coil => {
                    if b.coils.len() < end {
                        b.coils.resize(end, false);
                    }
                    continue;
                }
            };
            if v.len() < end {
                v.resize(end, 0);
            }
        }
        b
    }

    /// Write engineering values through the register map.
    pub fn write(&mut self, src: &ModbusSource, values: &[f64]) {
        for (sig, b) in &src.registers {
            let Some(v) = values.get(*sig as usize) else {
                continue;
            };
            let words = codec::encode(b, *v);
            let a = b.address as usize;
            match b.table {
                RegisterTable::Holding => self.holding[a..a + words.len()].copy_from_slice(&words),
                RegisterTable::Input => self.input[a..a + words.len()].copy_from_slice(&words),
                RegisterTable::Coil => self.coils[a] = words[0] != 0,
            }
        }
    }
}

#[derive(Clone)]
struct PlcService {
    bank: Arc<RwLock<Bank>>,
}

fn slice<T: Copy>(v: &[T], addr: u16, cnt: u16) -> Result<Vec<T>, ExceptionCode> {
    let (a, n) = (addr as usize, cnt as usize);
    if n == 0 || a + n > v.len() {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(v[a..a + n].to_vec())
}

impl tokio_modbus::server::Service for PlcService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let bank = self.bank.read();
        let res = match req {
            Request::ReadHoldingRegisters(a, n) => {
                slice(&bank.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                slice(&bank.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadCoils(a, n) => slice(&bank.coils, a, n).map(Response::ReadCoils),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(std::future::ready(res))
    }
}

/// Serve `bank` on `addr` while `up` is true; stop (closing connections) when
/// it turns false, and listen again when it turns true. Ends when `up` closes.
pub async fn serve(addr: SocketAddr, bank: Arc<RwLock<Bank>>, mut up: watch::Receiver<bool>) {
    loop {
        while !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                warn!(%addr, error = %e, "simulated PLC cannot listen; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        debug!(%addr, "simulated PLC up");
        let server = Server::new(listener);
        let svc = PlcService { bank: bank.clone() };
        let on_connected = |stream, peer| {
            let svc = svc.clone();
            async move { accept_tcp_connection(stream, peer, |_| Ok(Some(svc.clone()))) }
        };
        let mut up2 = up.clone();
        let down = async move {
            loop {
                if !*up2.borrow_and_update() {
                    return;
                }
                if up2.changed().await.is_err() {
                    return;
                }
            }
        };
        match server
            .serve_until(
                &on_connected,
                |e| debug!(error = %e, "PLC connection ended"),
                down,
            )
            .await
        {
            Ok(_) => debug!(%addr, "simulated PLC down"),
            Err(e) => warn!(%addr, error = %e, "simulated PLC server failed; restarting it"),
        }
        if up.has_changed().is_err() {
            return;
        }
    }
}

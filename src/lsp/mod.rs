//! The LSP side of marunochi: framing, the relay between editor and language server, the document
//! mirror and the intercepts. Entry point: [`Proxy`].

pub mod codec;
mod downstream;
pub mod intercept;
pub mod message;
pub mod mirror;
mod proxy;
mod transport;

pub use proxy::{Backend, Proxy, ProxyOptions};

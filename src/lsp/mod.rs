//! The LSP toolkit the relay (`proxy/`) is built from: framing, raw messages, the transports, the
//! language server child, the document mirror and the intercepts.

pub mod codec;
pub mod downstream;
pub mod intercept;
pub mod message;
pub mod mirror;
pub mod transport;

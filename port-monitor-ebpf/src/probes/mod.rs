//! One module per hook family, named after what it attaches to.

pub mod autobind;
pub mod bind;
pub mod tcp_state;

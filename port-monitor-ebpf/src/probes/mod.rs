//! One module per hook family, named after what it watches.

pub mod autobind;
pub mod bind;
pub mod bound_sockets;
pub mod socket_list;
pub mod tcp_state;

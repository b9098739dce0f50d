//! Kernel functions the fexit programs attach to, found in the running kernel's BTF.
//!
//! Function names and arguments change between kernel versions (`inet_bind`, `__inet_bind`,
//! `inet_bind_sk`, ...), and an fexit program reads its arguments by position, so each program
//! is written for one argument shape. A fact lists its candidate functions in order of
//! preference; the first whose BTF signature has the program's shape is the one loaded.

use btf_rs::{Btf, Type};

/// The arguments an fexit program expects, as far as it reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `(struct socket *, struct sockaddr *, int)`: the socket layer's `bind`.
    SocketBind,
    /// `(struct sock *, struct sockaddr *, int, u32)`: the inet layer's `__bind`.
    SockBindFlags,
    /// `(struct sock *)`.
    Sock,
}

impl Shape {
    /// The struct the first argument points to, and the number of arguments.
    const fn signature(self) -> (&'static str, usize) {
        match self {
            Self::SocketBind => ("socket", 3),
            Self::SockBindFlags => ("sock", 4),
            Self::Sock => ("sock", 1),
        }
    }

    fn describe(self) -> String {
        let (first, count) = self.signature();
        format!("{count} arguments, the first a struct {first} *")
    }
}

/// A kernel function an fexit program can serve a fact from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The kernel function.
    pub function: &'static str,
    /// The program written for its shape.
    pub program: &'static str,
    pub shape: Shape,
}

/// `bind()` on IPv4 sockets: the socket layer's entry point first (it also sees errors of
/// the cgroup bind hooks), then the function it calls.
pub const BIND4: &[Candidate] = &[
    Candidate {
        function: "inet_bind",
        program: "bind4_fexit",
        shape: Shape::SocketBind,
    },
    Candidate {
        function: "__inet_bind",
        program: "bind4_fexit_sk",
        shape: Shape::SockBindFlags,
    },
];

/// `bind()` on IPv6 sockets (IPv4-mapped addresses included).
pub const BIND6: &[Candidate] = &[
    Candidate {
        function: "inet6_bind",
        program: "bind6_fexit",
        shape: Shape::SocketBind,
    },
    Candidate {
        function: "__inet6_bind",
        program: "bind6_fexit_sk",
        shape: Shape::SockBindFlags,
    },
];

/// UDP autobind: the function that gives a port-less socket its port on first use.
pub const AUTOBIND: &[Candidate] = &[Candidate {
    function: "inet_autobind",
    program: "autobind_fexit",
    shape: Shape::Sock,
}];

/// Why a candidate does not fit this kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{function} is not in the kernel's BTF (renamed, inlined or not built)")]
    Absent { function: &'static str },
    #[error("{function} takes {found}, the program expects {expected}")]
    Shape {
        function: &'static str,
        found: String,
        expected: String,
    },
}

/// Checks that `candidate.function` is in `btf` with the arguments its program expects.
///
/// # Errors
/// When it is absent or has another signature.
pub fn check(btf: &Btf, candidate: &Candidate) -> Result<(), Mismatch> {
    let absent = || Mismatch::Absent {
        function: candidate.function,
    };
    let prototype = btf
        .resolve_types_by_name(candidate.function)
        .map_err(|_| absent())?
        .into_iter()
        .find_map(|ty| match ty {
            Type::Func(function) => match btf.resolve_chained_type(&function).ok()? {
                Type::FuncProto(prototype) => Some(prototype),
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(absent)?;
    let first = prototype
        .parameters
        .first()
        .and_then(|parameter| pointee_struct(btf, parameter));
    let found = format!(
        "{} arguments, the first {}",
        prototype.parameters.len(),
        first.as_deref().map_or_else(
            || "not a struct pointer".to_owned(),
            |name| format!("a struct {name} *")
        )
    );
    let (expected_first, expected_count) = candidate.shape.signature();
    if prototype.parameters.len() == expected_count && first.as_deref() == Some(expected_first) {
        Ok(())
    } else {
        Err(Mismatch::Shape {
            function: candidate.function,
            found,
            expected: candidate.shape.describe(),
        })
    }
}

/// The name of the struct a parameter points to, through qualifiers and typedefs.
fn pointee_struct(btf: &Btf, parameter: &btf_rs::Parameter) -> Option<String> {
    let Type::Ptr(pointer) = btf.resolve_chained_type(parameter).ok()? else {
        return None;
    };
    let mut ty = btf.resolve_chained_type(&pointer).ok()?;
    loop {
        ty = match ty {
            Type::Struct(ref structure) => return btf.resolve_name(structure).ok(),
            Type::Const(ref inner) | Type::Volatile(ref inner) | Type::Restrict(ref inner) => {
                btf.resolve_chained_type(inner).ok()?
            }
            Type::Typedef(ref inner) => btf.resolve_chained_type(inner).ok()?,
            _ => return None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::layout::running_kernel_btf;

    #[test]
    fn the_running_kernel_has_the_preferred_functions() {
        let btf = running_kernel_btf().expect("this kernel has BTF");
        for candidates in [BIND4, BIND6, AUTOBIND] {
            assert_eq!(check(&btf, &candidates[0]), Ok(()), "{candidates:?}");
        }
    }

    #[test]
    fn refuses_a_function_of_another_shape() {
        let btf = running_kernel_btf().expect("this kernel has BTF");
        let wrong = Candidate {
            function: "inet_bind",
            program: "bind4_fexit_sk",
            shape: Shape::SockBindFlags,
        };
        let error = check(&btf, &wrong).expect_err("inet_bind takes a struct socket *");
        assert!(
            error
                .to_string()
                .contains("takes 3 arguments, the first a struct socket *"),
            "{error}"
        );
        let absent = Candidate {
            function: "no_such_function",
            ..wrong
        };
        assert!(matches!(check(&btf, &absent), Err(Mismatch::Absent { .. })));
    }
}

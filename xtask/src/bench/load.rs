//! A closed-loop HTTP load generator that can run in another container's
//! network namespace.

//! Built-in resolvers. Each one passes the law kit (`laws`); see each type for the histories it
//! is order independent on.
mod counter_merge;
mod lww;
mod site_priority;

pub use counter_merge::CounterMerge;
pub use lww::LastWriterWins;
pub use site_priority::SitePriority;

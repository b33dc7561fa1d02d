//! Config sources other than the files: [`etcd`] (`daemon.source.etcd`). A source owns its
//! connection and hands each new config to the reload coordinator as a request on the one
//! reload queue, like the file watcher does.

pub mod etcd;

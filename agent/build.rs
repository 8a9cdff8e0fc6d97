include!("../common/build_commit.rs");

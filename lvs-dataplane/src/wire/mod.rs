//! Zero-copy header views over byte buffers and Internet checksums.

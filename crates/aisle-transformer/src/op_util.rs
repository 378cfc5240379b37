//! Helpers shared by the hand-written CPU ops (gelu, linear, norm, attention, optim).

use candle_core::{CpuStorage, Error, Layout, Result};

/// The `with_min_len` of a parallel iterator that splits across rayon's pool (`parallel`) or
/// runs on the calling thread (one that is already one of several parallel tasks).
pub(crate) fn min_len(parallel: bool) -> usize {
    if parallel {
        1
    } else {
        usize::MAX
    }
}

/// The f32 values of a contiguous CPU tensor's storage, or an error naming `op`.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(Error::Msg(format!("{op}: only f32 tensors are supported")));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(Error::Msg(format!("{op}: the input must be contiguous")));
    };
    Ok(&data[start..end])
}

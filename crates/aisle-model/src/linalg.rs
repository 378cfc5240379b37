//! Dense matrix products for the towers and the loss: a safe view type over `matrixmultiply`'s
//! sgemm, which picks AVX2 / FMA / AVX-512 kernels at run time. Measured in `aisle bench train`:
//! the heads and the loss are most of a step's arithmetic, and per-row dot products compiled for
//! the baseline x86-64 target (SSE2, no FMA) ran them several times slower.

/// A read-only `rows x cols` matrix over a slice, with arbitrary strides (so a transpose is a
/// view, not a copy).
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    ///
    /// # Panics
    /// When `data` is shorter than `rows * cols` (a programming error, not user input).
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        assert!(data.len() >= rows * cols, "matrix data too short");
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Mat<'a> {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `c = alpha * a b + beta * c`, with `c` row-major `a.rows x b.cols`.
///
/// # Panics
/// When the shapes do not agree or `c` is too short (programming errors).
pub fn gemm(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for x in &mut c[..m * n] {
            *x *= beta;
        }
        return;
    }
    // SAFETY: every index sgemm reads is `i * rs + j * cs` with i < rows and j < cols, which
    // `Mat::new` (and the transpose, which swaps both) keeps inside `data`; `c` holds `m * n`
    // elements written at `i * n + j`. The slices outlive the call and `c` is not aliased.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    c[i * n + j] += a[i * k + t] * b[t * n + j];
                }
            }
        }
        c
    }

    #[test]
    fn products_and_transposes_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![1.0; m * n];
        gemm(1.0, Mat::new(&a, m, k), Mat::new(&b, k, n), 0.0, &mut c);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // (b^T a^T)^T = a b: compute b^T a^T (n x m) from the same buffers through views.
        let mut ct = vec![0.0; n * m];
        gemm(
            1.0,
            Mat::new(&b, k, n).t(),
            Mat::new(&a, m, k).t(),
            0.0,
            &mut ct,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((ct[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
        // beta accumulates, alpha scales.
        let mut acc = want.clone();
        gemm(2.0, Mat::new(&a, m, k), Mat::new(&b, k, n), 1.0, &mut acc);
        for (x, y) in acc.iter().zip(&want) {
            assert!((x - 3.0 * y).abs() < 1e-4);
        }
    }

    #[test]
    #[should_panic(expected = "inner dimensions differ")]
    fn mismatched_shapes_are_caught() {
        let a = vec![0.0; 6];
        gemm(
            1.0,
            Mat::new(&a, 2, 3),
            Mat::new(&a, 2, 3),
            0.0,
            &mut [0.0; 9],
        );
    }
}

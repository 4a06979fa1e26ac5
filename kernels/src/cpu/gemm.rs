//! Bounds-checked wrapper over `matrixmultiply::sgemm` (strided, runtime-dispatched AVX/FMA
//! micro-kernels), the one place the CPU engine enters `unsafe`.

/// A row-major or transposed view of a matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// Index one past the largest element a `rows x cols` view with strides `rs`, `cs` touches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// `C = alpha * A B + beta * C` for `A: m x k`, `B: k x n`, `C: m x n` (row stride `rsc`,
/// column stride 1). Panics (a programming error, never user input) if a view is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: View<'_>,
    b: View<'_>,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= extent(m, n, rsc, 1), "gemm: C too short");
    if k == 0 {
        // matrixmultiply would read no A/B but still scale C; do it here to skip the checks.
        c.iter_mut()
            .take(extent(m, n, rsc, 1))
            .for_each(|v| *v *= beta);
        return;
    }
    assert!(
        a.data.len() >= extent(m, k, a.rs, a.cs),
        "gemm: A too short"
    );
    assert!(
        b.data.len() >= extent(k, n, b.rs, b.cs),
        "gemm: B too short"
    );
    // SAFETY: the asserts above prove every index the m x k, k x n and m x n strided views
    // address lies inside its slice; C is an exclusive borrow, so it aliases neither A nor B.
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
            rsc as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_products_by_hand() {
        // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [1.0f32; 4];
        sgemm(
            2,
            2,
            2,
            1.0,
            View {
                data: &a,
                rs: 2,
                cs: 1,
            },
            View {
                data: &b,
                rs: 2,
                cs: 1,
            },
            1.0,
            &mut c,
            2,
        );
        assert_eq!(c, [20.0, 23.0, 44.0, 51.0]);
        // A^T B with A read through transposed strides: [1 3; 2 4] * B = [26 30; 38 44].
        let mut c = [0.0f32; 4];
        sgemm(
            2,
            2,
            2,
            1.0,
            View {
                data: &a,
                rs: 1,
                cs: 2,
            },
            View {
                data: &b,
                rs: 2,
                cs: 1,
            },
            0.0,
            &mut c,
            2,
        );
        assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
    }
}

"""`geosdm records ...`: validate, grid, sample background, extract covariates/patches, assign CV folds, and
preview the collinearity filter on a training table.

Each command reads its inputs, calls one library function from :mod:`geosdm.records` and prints a summary.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from odc.geo.geobox import GeoBox

__all__ = ["app"]

app = typer.Typer(
    help="Species records: validate, grid, background, covariates and patches at points, spatial CV folds.",
    no_args_is_help=True,
)


class Duplicates(str, Enum):
    exact = "exact"
    cell = "cell"
    keep = "keep"


class Method(str, Enum):
    nearest = "nearest"
    bilinear = "bilinear"


class BackgroundMethod(str, Enum):
    uniform = "uniform"
    target_group = "target_group"
    bias = "bias"


def _read(path: Path, crs: str | None) -> pd.DataFrame:
    from geosdm.records import read_records

    return read_records(path, crs=crs)


def _open(cube: Path) -> xr.Dataset:
    import xarray as xr

    from geosdm.errors import DataSourceError

    try:
        return xr.open_zarr(cube, decode_coords="all")
    except FileNotFoundError:
        raise DataSourceError(f"--cube {str(cube)!r}: no Zarr cube there; build it first (geosdm cube build) or fix "
                              "the path") from None


def _geobox(cube: Path) -> GeoBox:
    import odc.geo.xr  # noqa: F401

    from geosdm.errors import GridError

    gbox = _open(cube).odc.geobox
    if gbox is None:
        raise GridError(f"cube {str(cube)!r} has no grid (spatial_ref); build it with geosdm.cube")
    return gbox


def _variables(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _write(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)


CRS_OPT = typer.Option(None, "--crs", help="CRS of x/y when the file has no crs column (e.g. EPSG:2154).")
CUBE_OPT = typer.Option(..., "--cube", help="Covariate cube (Zarr store); its grid is the target grid.")


@app.command()
def validate(
    path: Path = typer.Argument(..., help="Records file (CSV, Parquet/GeoParquet, GBIF zip or occurrence.txt)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the valid records here (.parquet or .csv)."),
    cube: Path | None = typer.Option(None, "--cube", help="Drop records outside this cube's grid."),
    bbox: str | None = typer.Option(None, "--bbox", help="Study region W,S,E,N in lon/lat (no cube yet): drop "
                                    "records outside it, find swapped lon/lat inside the valid ranges."),
    crs: str | None = CRS_OPT,
    duplicates: Duplicates = typer.Option(Duplicates.exact, help="Duplicate rule: exact rows, one PO per cell, keep."),
    max_uncertainty_m: float | None = typer.Option(None, help="Drop records with a larger coordinate uncertainty (m)."),
    fix_swapped: bool = typer.Option(False, help="Swap back x/y of swapped records instead of dropping them."),
    strict: bool = typer.Option(False, help="Fail (exit 1) if any record is invalid."),
) -> None:
    """Validate records and report dropped rows per reason."""
    from geosdm.errors import InputError
    from geosdm.records import validate_records

    try:
        bounds = tuple(float(v) for v in bbox.split(",")) if bbox else None
    except ValueError:
        raise InputError(f"--bbox {bbox!r} is not W,S,E,N numbers (lon/lat), e.g. --bbox -5.2,41.3,9.6,51.1"
                         ) from None
    valid, report = validate_records(
        _read(path, crs),
        geobox=_geobox(cube) if cube else None,
        bounds=bounds,  # type: ignore[arg-type]
        duplicates=duplicates.value,
        max_uncertainty_m=max_uncertainty_m,
        fix_swapped=fix_swapped,
        on_invalid="raise" if strict else "drop",
    )
    typer.echo(str(report))
    if out:
        _write(valid, out)
        typer.echo(f"wrote {len(valid)} records to {out}")


@app.command()
def grid(
    path: Path = typer.Argument(..., help="Validated records file."),
    cube: Path = CUBE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output table of cells (.parquet or .csv)."),
    crs: str | None = CRS_OPT,
) -> None:
    """Aggregate records to the cube's cells (counts per species and cell; survey plots with summed area)."""
    from geosdm.records import aggregate_to_cells

    cells = aggregate_to_cells(_read(path, crs), _geobox(cube))
    _write(cells, out)
    typer.echo(f"wrote {len(cells)} cell rows ({cells['species'].nunique()} species) to {out}")


@app.command()
def background(
    cube: Path = CUBE_OPT,
    n: int = typer.Option(10_000, "-n", help="Number of background points."),
    out: Path = typer.Option(..., "--out", "-o", help="Output table (.parquet or .csv)."),
    method: BackgroundMethod = typer.Option(BackgroundMethod.uniform, help="Sampling design."),
    records: Path | None = typer.Option(None, help="Target-group records file (method target_group)."),
    bias: str | None = typer.Option(None, help="Cube variable used as the bias layer (method bias)."),
    bandwidth: float = typer.Option(0.0, help="Target-group smoothing sigma in cells."),
    seed: int | None = typer.Option(None, help="Random seed."),
) -> None:
    """Sample background points over the cube's valid cells (all covariates finite)."""
    from geosdm.errors import MissingVariableError
    from geosdm.records import sample_background, valid_mask

    gbox = _geobox(cube)
    bias_layer = None
    if bias:
        ds = _open(cube)
        if bias not in ds.data_vars:
            raise MissingVariableError(f"--bias {bias!r} is not a variable of cube {str(cube)!r}; choose one of "
                                       f"{sorted(map(str, ds.data_vars))}")
        bias_layer = ds[bias].values
    table = sample_background(
        gbox,
        n,
        method=method.value,
        mask=valid_mask(cube),
        records=_read(records, None) if records else None,
        bias=bias_layer,
        bandwidth=bandwidth,
        seed=seed,
    )
    _write(table, out)
    typer.echo(f"wrote {len(table)} background points ({method.value}) to {out}")


@app.command()
def extract(
    path: Path = typer.Argument(..., help="Records file."),
    cube: Path = CUBE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output table with covariate columns (.parquet or .csv)."),
    variables: str | None = typer.Option(None, help="Comma-separated covariates (default: all)."),
    method: Method = typer.Option(Method.nearest, help="nearest or bilinear (categorical layers: nearest)."),
    crs: str | None = CRS_OPT,
) -> None:
    """Read covariates at the records' points from the cube."""
    from geosdm.records import extract_covariates

    recs = _read(path, crs)
    table = extract_covariates(cube, recs, variables=_variables(variables), method=method.value)
    _write(table, out)
    n_cov = table.shape[1] - recs.shape[1]
    typer.echo(f"wrote {len(table)} rows x {n_cov} covariates to {out}")


@app.command()
def patches(
    path: Path = typer.Argument(..., help="Validated records file."),
    cube: Path = CUBE_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Output patch store (Zarr v3 folder)."),
    size: int = typer.Option(32, help="Patch side in cells."),
    variables: str | None = typer.Option(None, help="Comma-separated covariates (default: all)."),
    overwrite: bool = typer.Option(False, help="Replace an existing store."),
    crs: str | None = CRS_OPT,
) -> None:
    """Write size x size covariate patches around the records' points to a Zarr store."""
    from geosdm.records import extract_patches

    recs = _read(path, crs)
    store = extract_patches(cube, recs, out, size=size, variables=_variables(variables), overwrite=overwrite)
    typer.echo(f"wrote {len(recs)} patches of {size} x {size} cells to {store}")


@app.command()
def folds(
    path: Path = typer.Argument(..., help="Records (or extracted table) file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output table with a 'fold' column (.parquet or .csv)."),
    block_size: float = typer.Option(..., help="Block side in CRS units (m)."),
    n_splits: int = typer.Option(5, help="Number of folds."),
    cube: Path | None = typer.Option(None, "--cube", help="Align blocks to this cube's grid."),
    seed: int | None = typer.Option(None, help="Random seed."),
    crs: str | None = CRS_OPT,
) -> None:
    """Assign spatial block CV folds (stored as a 'fold' column)."""
    from geosdm.records import SpatialBlockKFold, add_folds

    gbox = _geobox(cube) if cube else None
    recs = _read(path, crs)
    table = add_folds(recs, SpatialBlockKFold(n_splits, block_size=block_size, geobox=gbox, seed=seed))
    _write(table, out)
    counts = table["fold"].value_counts().sort_index().to_dict()
    typer.echo(f"wrote {len(table)} rows to {out}; rows per fold: {counts}")


@app.command()
def collinearity(
    path: Path = typer.Argument(..., help="Training table (.parquet or .csv: records + background + covariates)."),
    threshold: float = typer.Option(0.7, "--threshold", "-t", min=0.0, max=1.0,
                                    help="Largest |r| between two kept covariates (0.7 is usual)."),
    prefer: str | None = typer.Option(None, help="Comma-separated names or patterns kept first (e.g. 'bio01,lc_*')."),
    variables: str | None = typer.Option(None, help="Comma-separated candidates (default: numeric covariates)."),
    exclude: str | None = typer.Option(None, help="Comma-separated columns never to consider (e.g. bias layers)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the selection here (a folder: "
                                                              "covariate_selection.json)."),
) -> None:
    """Which covariates a collinearity filter keeps (|r| < threshold, preferred ones first) and why others go."""
    import pandas as pd

    from geosdm.errors import DataSourceError
    from geosdm.records import select_training_covariates

    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as err:  # missing, unreadable, or not a table (pyarrow's ArrowInvalid)
        raise DataSourceError(f"cannot read training table {str(path)!r} ({type(err).__name__}: {err}); give the "
                              "table the records step wrote (.parquet, or .csv)") from None
    sel = select_training_covariates(table, _variables(variables), threshold=threshold,
                                     prefer=_variables(prefer) or (), exclude=_variables(exclude) or ())
    typer.echo(sel.summary())
    typer.echo("kept: " + ", ".join(sel.selected))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        typer.echo(f"wrote {sel.save(out)}")

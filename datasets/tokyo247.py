"""Tokyo 24/7 (Torii et al., CVPR 2015), as evaluated by NetVLAD (CVPR 2016).

Ground truth: NetVLAD's ``tokyo247.mat``; positives within 25 m. The database is 6,332 Street View panoramas
cut into 12 consecutive views with one coordinate each: Recall@N counts panoramas, not cutouts
(``panorama_size`` 12). The ``.mat`` names the cutouts ``.jpg``; the released files are ``.png``.
Images: given out on request; ``--images`` takes the folder holding ``images/`` and ``query/``.
"""
from __future__ import annotations

from benchmarks.core.acquire import FileSpec
from datasets import DATASETS
from datasets.places import NETVLAD_STRUCTS, DbStructDataset


@DATASETS.register("tokyo247")
class Tokyo247(DbStructDataset):
    name = "tokyo247"
    description = "Tokyo 24/7: 75,984 cutouts of 6,332 panoramas, 315 day/night queries; Recall@N at 25 m"
    mat_files = {"test": "tokyo247.mat"}
    expected_counts = {"test": (75_984, 315)}
    panorama_size = 12
    query_dirs = ("query", "queries", ".")
    db_suffix = ".png"
    files = (NETVLAD_STRUCTS, FileSpec("images", manual=(
        "The Tokyo 24/7 images are given out on request by the dataset's authors (Torii et al., '24/7 place "
        "recognition by view synthesis', CVPR 2015): see http://www.ok.ctrl.titech.ac.jp/~torii/project/247/ "
        "and the NetVLAD project page https://www.di.ens.fr/willow/research/netvlad/ .")))

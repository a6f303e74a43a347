"""Pittsburgh 250k and its 30k subset (Torii et al., CVPR 2013), as split by NetVLAD (CVPR 2016).

Ground truth: NetVLAD's dbStruct files ``pitts{30k,250k}_{train,val,test}.mat``; positives within 25 m (UTM).
Images: given out on request by the authors; ``--images`` takes the folder holding ``images/`` (or
``000/`` ... ``010/``) and ``queries/`` (or ``queries_real/``).
"""
from __future__ import annotations

from benchmarks.core.acquire import FileSpec
from datasets import DATASETS
from datasets.places import NETVLAD_STRUCTS, DbStructDataset

PITTSBURGH_REQUEST = (
    "The Pittsburgh 250k images are given out on request by the dataset's authors (Torii et al., 'Visual Place "
    "Recognition with Repetitive Structures', CVPR 2013): see http://www.ok.ctrl.titech.ac.jp/~torii/project/"
    "repttile/ and the NetVLAD project page https://www.di.ens.fr/willow/research/netvlad/ .")


class Pittsburgh(DbStructDataset):
    splits = ("test", "train", "val")
    files = (NETVLAD_STRUCTS, FileSpec("images", manual=PITTSBURGH_REQUEST))


@DATASETS.register("pitts30k")
class Pitts30k(Pittsburgh):
    name = "pitts30k"
    description = "Pitts30k (NetVLAD split): 10,000 database images, 6,816 queries in test; Recall@N at 25 m"
    mat_files = {split: f"pitts30k_{split}.mat" for split in Pittsburgh.splits}
    expected_counts = {"test": (10_000, 6_816), "train": (10_000, 7_416), "val": (10_000, 7_608)}


@DATASETS.register("pitts250k")
class Pitts250k(Pittsburgh):
    name = "pitts250k"
    description = "Pitts250k (NetVLAD split): 83,952 database images, 8,280 queries in test; Recall@N at 25 m"
    mat_files = {split: f"pitts250k_{split}.mat" for split in Pittsburgh.splits}
    expected_counts = {"test": (83_952, 8_280), "train": (91_464, 7_824), "val": (78_648, 7_608)}

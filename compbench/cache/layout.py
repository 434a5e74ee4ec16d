"""The cache folder's layout, in one place for the store, the result cache, parity and ``compbench cache``.

```
<cache>/artifacts/<hash>/          a built model (models.artifact.ModelArtifact), renamed into place when whole
<cache>/artifacts/.<hash>-*/       a build in progress (or left by a killed one)
<cache>/results/<key>.json         a measured cell's rows (result_cache.ResultCache)
<cache>/reference-logits/<k>.npy   PyTorch fp32 logits that parity is measured against
```
"""

from __future__ import annotations

ARTIFACTS_DIR = "artifacts"
RESULTS_DIR = "results"
REFERENCE_LOGITS_DIR = "reference-logits"
LAST_USED = ".last_used"     # touched on each use of an artifact: what `cache prune --older-than` goes by

"""Where a trained model looked: Grad-CAM over whole grids, regions and their Jaccard index
against masks, and exports for viewers (OME-Zarr, GeoJSON for QuPath, PNG)."""

from nic_ray.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["heatmaps", "parse_target"], "nic_ray.explain.run_heatmaps"),
        **dict.fromkeys(["HeatmapOptions", "RegionOptions"], "nic_ray.explain.options"),
        **dict.fromkeys(["Target", "grad_cam", "grid_heatmap"], "nic_ray.explain.cam"),
        **dict.fromkeys(["heatmap_region", "jaccard", "mask_on_grid"], "nic_ray.explain.regions"),
    },
)

// TEMPORARY engine-bring-up placeholder; replaced by the real Fetch layer.
export {};

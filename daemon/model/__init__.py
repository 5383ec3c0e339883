"""Model serving, in one home: bundle directory -> LoadedBundle -> the ActiveModel a slot serves.

Import the pieces from their modules (a bundle pulls in torch only when one loads):
loader (load_bundle -> LoadedBundle, BundleUnusable), active (load_active -> ActiveModel),
slot (ModelSlot: hot-swap, bootstrap, shadow; daemon_slot), scoring (windows -> Signals, timed),
predict (POST /predict), charts (chart PNG -> Signal), vision (CLIP as the strategy's
VisionModel), shadow, batcher, serve (`vlmtrader serve`), bundle_check (`model verify`).
"""

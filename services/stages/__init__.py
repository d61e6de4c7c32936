"""The four stages (asr, llm, tts, render): one interface each (`base.py`), one backend per file.

A base class owns what every backend of its stage shares (input checks, loading on first use,
locking); a backend implements the protected method behind the public one. `head3d` is a
package, split by concern, and `render/gltf/` is its asset loader. Shared by all stages:
`sdk.py` (SDKs are imported at load time, never when a backend module is imported) and
`fake_options.py` (the fault-injection knobs of the four `fake` backends).
"""

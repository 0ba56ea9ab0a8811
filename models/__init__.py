"""Every model of the project, built by name from its config section: `models.build(config.model, ...)`.

  mlp, bert, trm    the recurrent-depth family (models/recurrent.py), driven over depth by `models.unroll`
  llama, looped     the causal decoder, stacked or with a weight-tied core (models/decoder.py), with a KV
                    cache for `models.generate`
  moe               the stacked decoder with routed SwiGLU experts in every block (models/moe.py); its FLOP
                    budget counts active FLOPs (`flops_proxy`)
  rwkv7             RWKV-7, linear time with a constant-size state (models/rwkv7.py): chunked in training,
                    step by step in generation (the state is its cache)

Shared fields have one name in every config (models/config.py); parameter counts and analytic FLOPs
come from models/flops.py for every model; auxiliary losses and statistics a model sows come back
through `models.apply_with_aux` (models/aux.py). models/ knows nothing of training or data.
"""
from models.aux import Aux, apply_with_aux
from models.config import ModelConfig
from models.decoder import DecoderConfig
from models.errors import ModelConfigError
from models.flops import count_params, estimate, flops_proxy, forward_flops_per_token
from models.recurrent_blocks import RecurrentConfig
from models.registry import build, config_of, names
from models.unroll import reset_carry, unroll, unroll_fn

__all__ = ['Aux', 'DecoderConfig', 'ModelConfig', 'ModelConfigError', 'RecurrentConfig', 'apply_with_aux', 'build',
           'config_of', 'count_params', 'estimate', 'flops_proxy', 'forward_flops_per_token', 'names', 'reset_carry',
           'unroll', 'unroll_fn']

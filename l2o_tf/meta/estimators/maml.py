"""M-L2O's estimator: MAML over each truncation.

The rule's weights take ``inner_steps`` steps on the truncation's meta-loss;
the meta-gradient is that of the same truncation run with the adapted weights
(second-order through the inner steps, or first-order).  The optimizee carries
on with the adapted rule's unroll.
"""

from l2o_tf.meta import adaptation
from l2o_tf.meta.estimators.base import Estimator


class MAML(Estimator):
    name = "maml"

    def __init__(self, rule, maml_config):
        super().__init__(rule)
        self.maml_config = maml_config

    def gradient(self, problem, truncation, index, noise_seed):
        start = ((truncation.params, truncation.state), truncation.seed)
        loss, grads, result = adaptation.maml_meta_gradient(
            self.rule, problem.task, start, start, problem.unroll_config, self.maml_config, truncation.start_step,
            return_unroll=True, loss_scale=truncation.loss_scale,
        )
        result = result._replace(teacher_state=truncation.teacher_state)
        return loss, self._dense(grads), result, truncation.estimator_state

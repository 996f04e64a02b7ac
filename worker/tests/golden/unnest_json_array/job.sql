CREATE TABLE posts (
  id BIGINT,
  tags STRING[]
) WITH (connector = 'kafka', topic = 'posts', format = 'json');

CREATE TABLE post_tags (
  id BIGINT,
  tag STRING
) WITH (connector = 'kafka', topic = 'post-tags', format = 'json');

INSERT INTO post_tags
SELECT id, UNNEST(tags) AS tag
FROM posts;
